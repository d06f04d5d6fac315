"""ONNX (fp32): normalisation and the final activation inside, dynamic batch, opset 17."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest

OPSET = 17
INPUT_NAME = "image"


def write_onnx(model: torch.nn.Module, manifest: Manifest, path: Path) -> None:
    """The fp32 graph every ONNX-derived target starts from."""
    size = manifest.input
    example = torch.rand(1, 3, size.height, size.width) * 255
    names = list(manifest.output["names"])
    dynamic = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=[INPUT_NAME],
                          output_names=names, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))


def export(model: torch.nn.Module, manifest: Manifest, package_dir: Path, context: Any = None) -> dict[str, Any]:
    file = "model.onnx"
    size = manifest.input
    names = list(manifest.output["names"])
    write_onnx(model, manifest, Path(package_dir) / file)
    return {
        "file": file,
        "format": "onnx",
        "precision": "fp32",
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size.height, size.width], "layout": "NCHW",
                  "dtype": "float32", "range": [0, 255]},
        "outputs": names,
        "nms_in_graph": False if manifest.task == DETECTION else None,
        "runtime_backend": "onnx",
    }


def smoke_run(path: Path, manifest: Manifest, what: str, code: str) -> tuple[Any, list[Any]]:
    """Load a derived ONNX file in onnxruntime's CPU provider and run a float32 batch of two.

    Any failure, or a non-finite output, makes the file unusable: an ExportError with ``code``.
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        size = manifest.input
        batch = np.full((2, 3, size.height, size.width), 127.0, dtype=np.float32)
        outputs = session.run(None, {session.get_inputs()[0].name: batch})
    except Exception as exc:  # noqa: BLE001 - any runtime failure means an unusable file
        raise ExportError(f"The {what} file does not run in onnxruntime: {exc}", code=code) from exc
    if not all(np.isfinite(o).all() for o in outputs):
        raise ExportError(f"The {what} file gives non-finite outputs.", code=code)
    return session, outputs
