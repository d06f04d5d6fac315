"""ONNX int8: static post-training quantization with onnxruntime, QDQ format.

The recipe (chosen by measurement on this project's fixtures and on the hymenoptera / raccoon
benchmark packages, see the entry's ``quantization`` field):

- onnxruntime's pre-processing first (ONNX shape inference, then onnxruntime's basic graph
  optimisation, which folds EfficientNet's computed "SAME" pads, 17 Pad nodes with their shape
  arithmetic, into the convolutions). Its symbolic shape inference is skipped: it exists for
  transformer models and fails ("Incomplete symbolic shape inference") on the detector's
  graph, while ONNX's own shape inference is enough for these CNNs.
- QDQ format (onnxruntime fuses QDQ groups into the same QLinearConv kernels as the older
  QOperator format, and other runtimes can read it), uint8 asymmetric activations (ReLU6 becomes a
  free clamp of the quantized range), int8 symmetric per-channel weights.
- ``reduce_range``: 7-bit weights. On x86 CPUs without VNNI (this project's machines) the u8 x s8
  kernels add pairs of products in int16 and saturate; 7-bit weights avoid that. It measured
  more accurate here, not less, at the same speed.
- MinMax calibration on the package's training images (``context.calibration_inputs``).
- The last weighted layers and everything after them stay float (a classifier's Gemm and
  softmax/sigmoid, the detector's output convolutions and box decoding): they are a fraction of
  a percent of the compute; quantized, they put probabilities and box corners on a 1/256 grid,
  and a head fitted on few images can have weights of ~2000 whose logits 8-bit inputs ruin
  (on the multiclass fixture, quantizing that Gemm alone dropped accuracy from 8/8 to 7/8, with
  probability errors up to 0.67; kept in float, the largest error was 4e-4).

Speed: on an AVX2 CPU without VNNI (2-core AMD EPYC), single image, the file runs ~1.4-1.5x
faster than fp32 with one thread for EfficientNet-Lite0 (224 classifier, 320 detector), less for
MobileNetV2. Profiling shows why not more: the pointwise convolutions gain ~1.5x, but
onnxruntime's int8 depthwise and 3-channel stem kernels are slower than its fp32 NCHWc ones
(0.4-0.8x). Keeping those layers in float was measured slower still (layout changes around them).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest

FILE = "model-int8.onnx"

#: the recipe, recorded verbatim in the manifest entry
RECIPE: dict[str, Any] = {
    "format": "QDQ",
    "activations": "uint8, asymmetric, per-tensor",
    "weights": "int8, symmetric, per-channel, 7-bit range [-64, 64] (reduce_range)",
    "per_channel": True,
    "reduce_range": True,
    "calibration_method": "MinMax",
    "float_tail": "the last weighted layers and the nodes after them stay float32",
}


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: list[np.ndarray], work_dir: Path) -> dict[str, Any]:
    """Pre-process, calibrate and quantize ``fp32_path`` into ``out_path``; return the details."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from falconet.exporter.onnx_fp16_target import output_layers

    prepared = work_dir / "model-prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    input_name = graph.input[0].name
    keep_float = output_layers(graph)

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches once, as onnxruntime's calibrator expects."""

        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=RECIPE["per_channel"], reduce_range=RECIPE["reduce_range"],
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
    # No "CalibMaxIntermediateOutputs": in onnxruntime 1.32 it drops each full chunk of
    # outputs without merging its ranges. MinMax calibration only keeps per-tensor min/max
    # reductions per image anyway, so memory stays small without it.
    kept_ops = sorted({n.op_type for n in graph.node if n.name in set(keep_float)})
    return {"nodes_kept_float32": len(keep_float), "ops_kept_float32": kept_ops}


def quantized_op_counts(path: Path) -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes and int8 weight tensors the file holds."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    int8_weights = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 4]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear"),
            "int8_conv_weights": len(int8_weights)}


def _check(path: Path, manifest: Manifest) -> dict[str, int]:
    """The file must really be quantized and run in onnxruntime's CPU provider."""
    from falconet.exporter.onnx_target import smoke_run

    counts = quantized_op_counts(path)
    if not counts["QuantizeLinear"] or not counts["int8_conv_weights"]:
        raise ExportError(f"The int8 ONNX file holds no quantized convolutions ({counts}).", code="ExportOnnxInt8NotQuantized")
    smoke_run(path, manifest, "int8 ONNX", "ExportOnnxInt8Unrunnable")
    return counts


def export(model: Any, manifest: Manifest, package_dir: Path, context: Any) -> dict[str, Any]:
    """model-int8.onnx, calibrated on the package's training images."""
    import onnxruntime as ort

    from falconet.exporter.onnx_target import INPUT_NAME, OPSET

    path = Path(package_dir) / FILE
    calibration = context.calibration_inputs()
    with tempfile.TemporaryDirectory(prefix="falconet-int8-") as tmp:
        fp32 = context.write_fp32_onnx(Path(tmp) / "model-fp32.onnx")
        kept = quantize_onnx(fp32, path, calibration, Path(tmp))
    counts = _check(path, manifest)
    size = manifest.input
    return {
        "file": FILE,
        "precision": "int8",
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size.height, size.width], "layout": "NCHW",
                  "dtype": "float32", "range": [0, 255]},
        "outputs": list(manifest.output["names"]),
        "quantization": {
            **RECIPE, **kept, **counts,
            "tool": f"onnxruntime {ort.__version__} quantization.quantize_static (after quant_pre_process)",
            "calibration_images": len(calibration),
            "calibration_source": "training images (never held-out), each once as inference sees it, then augmented views",
        },
        "io_dtype": "float32 (quantized and dequantized inside the graph)",
        "nms_in_graph": False if manifest.task == DETECTION else None,
        "runtime_backend": "onnx-int8",
    }
