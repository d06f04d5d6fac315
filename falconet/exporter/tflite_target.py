"""TFLite / LiteRT: model.tflite (fp32), model-fp16.tflite (fp16 weights), model-int8.tflite (int8).

- Converted from the torch model by litert-torch with an **NHWC** input named ``image`` (what
  Android/iOS camera code and mobile delegates expect), plain 0-255 RGB pixels (normalisation is
  inside), a fixed batch of one, and the outputs named as in the manifest (``probabilities``, or
  ``boxes`` and ``scores``) in the ``serving_default`` signature, so an app finds them by name.
- fp16: ai-edge-quantizer's float casting of the convolution / fully connected weights to float16,
  with explicit DEQUANTIZE ops: half the size, float32 input/output and float32 compute.
- int8: ai-edge-quantizer ``static_wi8_ai8`` (int8 weights and activations) calibrated on the
  package's training images (never the held-out ones parity is measured on). The input is int8
  (``pixel - 128``, recorded as scale 1 / zero point -128); every convolution runs in int8; the tail
  after the last convolution stays float32 and so do the outputs (see ``_int8`` for why). The
  entry records the input and output types and quantization, and the runtime backend quantizes the
  pixels itself.

The float conversion takes seconds, so it is done once per model and reused by the fp16 and int8
files when the formats are exported together.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest
from falconet.runtime.backends import default_threads

INPUT_NAME = "image"
SIGNATURE = "serving_default"
FILES = {"fp32": "model.tflite", "fp16": "model-fp16.tflite", "int8": "model-int8.tflite"}
#: a fixed batch of one: what mobile runtimes and delegates handle best; the backend loops over a batch
BATCH = 1
#: what the arithmetic runs in, for the manifest (XNNPACK turns fp16 weights into fp32 at load)
INFERENCE_PRECISION = {
    "fp32": "float32",
    "fp16": "float32 compute on float16-stored weights",
    "int8": "int8 input and convolutions; float32 after the last convolution",
}
#: ai-edge-quantizer's recipe for the convolutions (the tail after them is kept in float: see _int8)
INT8_RECIPE = "static_wi8_ai8"

_float_cache: dict[str, bytes] = {}


def export(model: Any, manifest: Manifest, package_dir: Path, context: Any) -> dict[str, Any]:
    """Write the file for ``context.precision`` and return its manifest entry (read back from the file)."""
    precision = context.precision
    if precision not in FILES:
        raise ExportError(f"TFLite export supports {', '.join(FILES)}, not {precision}.", code="ExportPrecisionUnsupported")
    float_model = float_flatbuffer(model, manifest)
    details: dict[str, Any] = {}
    if precision == "fp32":
        data = float_model
    elif precision == "fp16":
        data = _fp16(float_model)
    else:
        data, details = _int8(float_model, manifest, context)
    file = FILES[precision]
    target = Path(package_dir) / file
    target.write_bytes(data)
    try:
        described = describe(target, manifest)
    except Exception:
        target.unlink(missing_ok=True)  # the registry restores a previous file; a broken new one must go
        raise
    entry = {"file": file, "format": context.name, "precision": precision, **described,
             "inference_precision": INFERENCE_PRECISION[precision], "batch": BATCH}
    entry.update(details)
    entry["converter"] = _versions()
    entry["runtime_backend"] = context.name
    return entry


# ------------------------------------------------------------------ float conversion

def float_flatbuffer(model: Any, manifest: Manifest) -> bytes:
    """The fp32 flatbuffer of ``model`` (cached by weights and contract, so fp16/int8 reuse it)."""
    key = _model_key(model, manifest)
    if key not in _float_cache:
        _float_cache.clear()  # one model at a time: a flatbuffer is as big as the weights
        _float_cache[key] = _convert(model, manifest)
    return _float_cache[key]


def _model_key(model: Any, manifest: Manifest) -> str:
    digest = hashlib.sha256(repr((manifest.input.width, manifest.input.height, list(manifest.output["names"]))).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _convert(model: Any, manifest: Manifest) -> bytes:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its rich progress lines would flood the CLI
    try:
        import litert_torch
        import torch
    except ImportError as exc:
        raise ExportError(f"The TFLite export needs falconet[tflite] installed ({exc}).",
                          code="ExportToolMissing", status=500) from exc

    class NamedNHWC(torch.nn.Module):
        """NHWC ``image`` in, the manifest's outputs by name out (litert-torch names the signature after them)."""

        def __init__(self, inner: torch.nn.Module, names: list[str]) -> None:
            super().__init__()
            self.inner = litert_torch.to_channel_last_io(inner, args=[0])
            self.names = names

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.inner(image)
            out = out if isinstance(out, (tuple, list)) else (out,)
            return dict(zip(self.names, out))

    size = manifest.input
    example = torch.rand(BATCH, size.height, size.width, 3) * 255
    wrapped = NamedNHWC(model.eval(), list(manifest.output["names"])).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(wrapped, sample_kwargs={INPUT_NAME: example})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.tflite"
                edge.export(str(path))
                return path.read_bytes()
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; the user needs one code
        raise ExportError(f"litert-torch could not convert the model: {exc}", code="TFLiteConversionFailed") from exc


# ------------------------------------------------------------------ fp16 weights

def _fp16(float_model: bytes) -> bytes:
    """Weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED cast to float16 (compute stays float32)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    q = quantizer.Quantizer(bytearray(float_model))
    q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                             algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return _quantize(q, None)


# ------------------------------------------------------------------ full integer int8

#: ops that carry the network's weights: everything up to the last of them runs in int8
WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})
#: what the 0-255 pixels quantize to: scale 1, zero point -128 represents every integer pixel exactly
#: (an app feeds ``pixel - 128``); min/max calibration would clip the brightest pixels instead
INPUT_RANGE = (0.0, 255.0)


def _int8(float_model: bytes, manifest: Manifest, context: Any) -> tuple[bytes, dict[str, Any]]:
    """int8 from the input to the last convolution; the small tail after it (global pool, classifier
    layer, softmax/sigmoid, detection box decoding and score product) stays in float32.

    Why the tail: Falconet's fitted classifier heads fold the feature standardisation into the
    weights, so a feature that hardly varies on the training images gets a weight hundreds of times
    the typical one and the logits come out of large sums that cancel. With that layer in int8 the
    multiclass test fixture agreed with torch on 6 of 8 images (probabilities off by 0.93); with the
    tail in float, 8 of 8 (max difference 2e-4). On a real photo set (hymenoptera) both agreed on
    152/153, so the float tail costs nothing where int8 would have been fine. A detector's scores
    are products and square roots of sigmoids: in int8 their range is the calibration images' score
    range, so a more confident detection would saturate. The tail is well under 1 % of the
    multiply-adds, and float outputs spare apps a dequantization step.
    """
    from ai_edge_quantizer import calibrator, quantizer, recipe

    tail = float_tail(float_model)
    rules = recipe.static_wi8_ai8()
    no_quant = {"compute_precision": "FLOAT", "explicit_dequantize": False}
    if tail:
        scopes = "|".join(re.escape(scope) for scope, _ in tail)
        rules.append({"regex": f"^(?:{scopes})$", "operation": "*", "algorithm_key": "no_quantize", "op_config": no_quant})
    rules.append({"regex": ".*", "operation": "OUTPUT", "algorithm_key": "no_quantize", "op_config": no_quant})
    q = quantizer.Quantizer(bytearray(float_model), rules)
    views = context.calibration_inputs(layout="NHWC")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar cannot be switched off otherwise
            ranges = q.calibrate({SIGNATURE: [{INPUT_NAME: v.astype(np.float32)} for v in views]},
                                 num_threads=default_threads(),
                                 mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"int8 calibration failed: {exc}", code="QuantizationFailed") from exc
    for name in [k for k in ranges if k.startswith(f"{SIGNATURE}_{INPUT_NAME}")]:
        shape = np.shape(ranges[name]["min"])
        ranges[name] = {"min": np.full(shape, INPUT_RANGE[0]), "max": np.full(shape, INPUT_RANGE[1])}
    data = _quantize(q, ranges)
    kept = Counter(op for _, op in tail)
    details = {
        "quantization": {
            "tool": "ai-edge-quantizer", "recipe": INT8_RECIPE,
            "weights": "int8 symmetric, per output channel",
            "activations": "int8 asymmetric, per tensor (min/max of the calibration views, moving average)",
            "input": "int8, scale 1 and zero point -128: q = pixel - 128, exact for 0-255 pixels",
            "outputs": "float32 (the tail after the last convolution runs in float)",
            "kept_float": dict(sorted(kept.items())),
            "kept_float_reason": "the ops after the last convolution (pooling, classifier layer, softmax/sigmoid, "
                                 "box decoding, score product): int8 there flipped classifier answers and "
                                 "saturated detection scores; they are < 1 % of the multiply-adds",
            "calibration": {"views": len(views), "source": "training images (held-out ones excluded), "
                                                            "each once as inference sees it, then augmented views"},
        },
    }
    return data, details


def float_tail(float_model: bytes) -> list[tuple[str, str]]:
    """(op scope, op name) of the ops after the last convolution on every path to an output.

    The scope is the ai-edge-quantizer's name for an op (its output tensor names joined by ';'),
    which is what a recipe's regex matches.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    builtin = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph = tfl.read_model(bytearray(float_model))
    subgraph = graph.subgraphs[0]
    ops = list(subgraph.operators)
    codes = [graph.operatorCodes[op.opcodeIndex] for op in ops]
    # codes above 127 live in builtinCode only; older files keep small ones in deprecatedBuiltinCode
    names = [builtin.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in codes]
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(i)
    feeds_conv = [False] * len(ops)
    for i in reversed(range(len(ops))):  # operators are stored in execution (topological) order
        for t in ops[i].outputs:
            if any(names[j] in WEIGHTED_OPS or feeds_conv[j] for j in consumers.get(int(t), [])):
                feeds_conv[i] = True
    return [(tfl.get_op_scope(op, subgraph.tensors), names[i]) for i, op in enumerate(ops)
            if names[i] not in WEIGHTED_OPS and not feeds_conv[i]]


def _quantize(q: Any, calibration: dict[str, Any] | None) -> bytes:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
            warnings.simplefilter("ignore")
            result = q.quantize(calibration, enable_progress_report=False, enable_progress_bar=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"ai-edge-quantizer failed: {exc}", code="QuantizationFailed") from exc
    return bytes(result.quantized_model)


# ------------------------------------------------------------------ what the written file is

def describe(path: Path, manifest: Manifest) -> dict[str, Any]:
    """Input and outputs as the saved file declares them (read back, not assumed)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    if SIGNATURE not in signatures:
        raise ExportError(f"{path.name} has no {SIGNATURE} signature ({list(signatures)}).", code="TFLiteConversionFailed")
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    names = list(manifest.output["names"])
    if INPUT_NAME not in inputs or set(outputs) != set(names):
        raise ExportError(f"{path.name}: signature inputs {list(inputs)} / outputs {list(outputs)}, expected "
                          f"{INPUT_NAME} / {names}.", code="TFLiteConversionFailed")
    image = inputs[INPUT_NAME]
    return {
        "signature": SIGNATURE,
        "input": {"name": INPUT_NAME, "tensor": image["name"], "shape": [int(v) for v in image["shape"]],
                  "layout": "NHWC", "dtype": np.dtype(image["dtype"]).name, "range": [0, 255],
                  **_quant(image)},
        "outputs": names,
        "output_tensors": {n: {"tensor": outputs[n]["name"], "shape": [int(v) for v in outputs[n]["shape"]],
                               "dtype": np.dtype(outputs[n]["dtype"]).name, **_quant(outputs[n])} for n in names},
        "nms_in_graph": False if manifest.task == DETECTION else None,
    }


def _quant(details: dict[str, Any]) -> dict[str, Any]:
    """Scale and zero point of an integer tensor: real = scale * (q - zero_point)."""
    if np.dtype(details["dtype"]).kind == "f":
        return {}
    scale, zero_point = details["quantization"]
    return {"quantization": {"scale": float(scale), "zero_point": int(zero_point)}}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
