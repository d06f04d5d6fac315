"""OpenVINO IR (model.xml + model.bin) in fp32, fp16 and int8, converted from the fp32 ONNX graph.

- fp32: exact weights (``compress_to_fp16=False``; ``ov.save_model`` halves them by default).
- fp16: ``compress_to_fp16=True``: fp16 weights, half the download; the CPU plugin expands them
  to f32 when it compiles the model, so it computes in f32.
- int8: NNCF post-training quantization (default preset: symmetric int8 weights and
  activations, fast bias correction) calibrated on the package's training images; the last
  weighted layers and what follows them stay float, as in the ONNX int8 file.

The CPU plugin picks its own inference precision: bf16 on CPUs with avx512_bf16/AMX, which moves
outputs by ~0.3 (see shared/research/export-toolchain.md). Every entry therefore records
``inference_precision`` and OpenVINOBackend compiles with exactly that hint, so the file runs as
its parity was measured. It is "f32" for all three: for fp32/fp16 parity needs it, and for int8
the layers NNCF leaves in float (the head's activations, the detector's decoding) then behave the
same on every CPU.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest
from falconet.core.vendor_telemetry import import_openvino, telemetry_declined

FILES = {"fp32": "model.xml", "fp16": "model-fp16.xml", "int8": "model-int8.xml"}
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32"}


def _import_openvino() -> Any:
    try:
        ov = import_openvino()
    except ImportError as exc:
        raise ExportError(f"The OpenVINO export needs falconet[openvino-export] installed ({exc}).",
                          code="ExportToolMissing") from exc
    return ov


#: the OpenVINO operations that carry weights and almost all of the arithmetic
HEAVY_OPS = frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"})


def output_layers(ov_model: Any) -> list[str]:
    """Friendly names of the last weighted layers and of every operation after them: kept in
    float by the int8 export for the reasons given in falconet.exporter.onnx_fp16_target.output_layers
    (on the multiclass fixture, quantizing the head's MatMul took accuracy from 8/8 to 5/8)."""
    feeds_heavy: dict[str, bool] = {}
    ops = ov_model.get_ordered_ops()
    for op in reversed(ops):
        feeds_heavy[op.get_friendly_name()] = any(
            t.get_node().get_type_name() in HEAVY_OPS or feeds_heavy.get(t.get_node().get_friendly_name(), False)
            for out in op.outputs() for t in out.get_target_inputs())
    skip = {"Constant", "Parameter", "Result"}
    return [op.get_friendly_name() for op in ops if not feeds_heavy[op.get_friendly_name()] and op.get_type_name() not in skip]


def quantize_int8(ov_model: Any, calibration: list[Any]) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training quantization of ``ov_model``; returns the model and what was done."""
    try:
        import nncf
    except ImportError as exc:
        raise ExportError(f"The OpenVINO int8 export needs nncf (falconet[openvino-export]) installed ({exc}).",
                          code="ExportToolMissing") from exc
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)
    keep_float = output_layers(ov_model)
    quantized = nncf.quantize(ov_model, nncf.Dataset(calibration), subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=True,
                              ignored_scope=nncf.IgnoredScope(names=keep_float, validate=False))
    return quantized, {
        "tool": f"nncf {nncf.__version__} quantize (post-training)",
        "preset": "performance (symmetric int8 weights and activations)",
        "weights": "int8, symmetric, per-channel",
        "activations": "int8 / uint8 by layer, per-tensor (FakeQuantize)",
        "bias_correction": "fast",
        "float_tail": "the last weighted layers and the operations after them stay float32",
        "operations_kept_float": len(keep_float),
        "calibration_images": len(calibration),
        "calibration_source": "training images (never held-out), each once as inference sees it, then augmented views",
    }


def export(model: Any, manifest: Manifest, package_dir: Path, context: Any) -> dict[str, Any]:
    """Write the IR for ``context.precision`` next to the other exports."""
    ov = _import_openvino()
    precision = context.precision
    if precision not in FILES:
        raise ExportError(f"No OpenVINO export for precision {precision!r}.", code="BadRequestExportFormat", status=400)
    xml = Path(package_dir) / FILES[precision]
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="falconet-openvino-") as tmp, telemetry_declined():
        fp32 = context.write_fp32_onnx(Path(tmp) / "model-fp32.onnx")
        ov_model = ov.convert_model(str(fp32))
        if precision == "int8":
            ov_model, extra["quantization"] = quantize_int8(ov_model, context.calibration_inputs())
        ov.save_model(ov_model, str(xml), compress_to_fp16=precision == "fp16")
    _check_names(ov, xml, manifest)
    size = manifest.input
    return {
        "file": xml.name,
        "extra_files": [xml.with_suffix(".bin").name],
        "precision": precision,
        "input": {"name": "image", "shape": ["batch", 3, size.height, size.width], "layout": "NCHW",
                  "dtype": "float32", "range": [0, 255]},
        "outputs": list(manifest.output["names"]),
        "weights": {"fp32": "float32", "fp16": "float16 (compress_to_fp16)", "int8": "int8"}[precision],
        "inference_precision": INFERENCE_PRECISION[precision],
        "openvino": ov.__version__,
        "converter": f"openvino {ov.__version__} convert_model from the fp32 ONNX graph",
        **extra,
        "nms_in_graph": False if manifest.task == DETECTION else None,
        "runtime_backend": context.name,
    }


def _check_names(ov: Any, xml: Path, manifest: Manifest) -> None:
    """The IR must expose the manifest's output names, which the backend reads its outputs by."""
    model = ov.Core().read_model(str(xml))
    names = {name for output in model.outputs for name in output.get_names()}
    missing = [n for n in manifest.output["names"] if n not in names]
    if missing:
        raise ExportError(f"The OpenVINO IR lacks the outputs {missing} (has {sorted(names)}).", code="ExportOpenVINOOutputs")
