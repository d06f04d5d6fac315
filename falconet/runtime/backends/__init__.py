"""Inference backends, registered by name and imported only when used.

A Raspberry Pi without OpenVINO never imports it: the registry holds import paths, not classes.
Every backend takes a float32 batch in the layout it declares and returns the model's outputs
as numpy arrays in the manifest's output order.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from falconet.core.errors import BackendUnavailableError
from falconet.core.manifest import Manifest


class Backend(Protocol):
    name: str
    layout: str  # "NCHW" or "NHWC"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        ...


#: backend name (= export format name) -> (module:class, the pip extra that provides it).
#: One backend class serves every precision of its runtime; it reads its file from the manifest's
#: ``exports[name]`` entry.
REGISTRY: dict[str, tuple[str, str]] = {
    "onnx": ("falconet.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend", "falconet (onnxruntime)"),
    "onnx-fp16": ("falconet.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend", "falconet (onnxruntime)"),
    "onnx-int8": ("falconet.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend", "falconet (onnxruntime)"),
    # model.onnx on onnxruntime's TensorRT, then CUDA, then CPU provider (the Jetson image's onnxruntime-gpu).
    "onnx-gpu": ("falconet.runtime.backends.onnxruntime_backend:OnnxGpuBackend", "onnxruntime-gpu (containers/Dockerfile.jetson)"),
    "tflite": ("falconet.runtime.backends.litert_backend:LiteRTBackend", "falconet[litert]"),
    "tflite-fp16": ("falconet.runtime.backends.litert_backend:LiteRTBackend", "falconet[litert]"),
    "tflite-int8": ("falconet.runtime.backends.litert_backend:LiteRTBackend", "falconet[litert]"),
    "openvino": ("falconet.runtime.backends.openvino_backend:OpenVINOBackend", "falconet[openvino]"),
    "openvino-fp16": ("falconet.runtime.backends.openvino_backend:OpenVINOBackend", "falconet[openvino]"),
    "openvino-int8": ("falconet.runtime.backends.openvino_backend:OpenVINOBackend", "falconet[openvino]"),
    # The torch backend lives on the training side; the runtime only knows its import path.
    "torch": ("falconet.training.torch_backend:TorchBackend", "falconet[train]"),
}


def create_backend(name: str, package_dir: Path, manifest: Manifest, **options: Any) -> Backend:
    """``options`` go to the backend: ``threads``, and for exported files ``export_entry`` (the
    exporter passes the entry it is about to record, before the manifest holds it)."""
    if name not in REGISTRY:
        raise BackendUnavailableError(f"Unknown backend {name!r}; known: {', '.join(REGISTRY)}.", status=400)
    target, extra = REGISTRY[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"The {name!r} backend needs {extra} installed ({exc}).") from exc
    if name != "torch":
        options["export_name"] = name
    return getattr(module, class_name)(package_dir, manifest, **options)


def export_file(package_dir: Path, manifest: Manifest, export_name: str,
                export_entry: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """The exported file a backend should open, checked against the manifest's sha256.

    With ``export_entry`` (the exporter measuring a file it has just written) the hash is not yet
    recorded and is not checked.
    """
    from falconet.core.manifest import verify_files

    entry = export_entry if export_entry is not None else manifest.exports.get(export_name)
    if not entry or not entry.get("file"):
        raise BackendUnavailableError(
            f"{package_dir} has no {export_name} export: run falconet export {package_dir} --format {export_name}.",
            code="ExportNotFound")
    path = Path(package_dir) / entry["file"]
    if not path.exists():
        raise BackendUnavailableError(
            f"{path} does not exist: export the package again (falconet export {package_dir} --format {export_name}).",
            code="ExportNotFound")
    if export_entry is None:
        verify_files(package_dir, manifest, [entry["file"], *entry.get("extra_files", [])])
    return path, entry


def default_threads() -> int:
    """The cores this process may use (a container's CPU set, not the host's)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
