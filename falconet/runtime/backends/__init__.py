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


#: backend name -> (module:class, the pip extra that provides it)
REGISTRY: dict[str, tuple[str, str]] = {
    "onnx": ("falconet.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend", "falconet (onnxruntime)"),
    # The torch backend lives on the training side; the runtime only knows its import path.
    "torch": ("falconet.training.torch_backend:TorchBackend", "falconet[train]"),
}


def create_backend(name: str, package_dir: Path, manifest: Manifest, **options: Any) -> Backend:
    if name not in REGISTRY:
        raise BackendUnavailableError(f"Unknown backend {name!r}; known: {', '.join(REGISTRY)}.", status=400)
    target, extra = REGISTRY[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"The {name!r} backend needs {extra} installed ({exc}).") from exc
    return getattr(module, class_name)(package_dir, manifest, **options)
