"""Falconet: train image classifiers and object detectors from a few dozen photos; run them anywhere.

``import falconet`` stays light: the runtime (numpy, pillow, onnxruntime) is imported when
``falconet.load`` is first called, and torch only by the training side.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from falconet.runtime.predictor import Predictor


def load(path: Any, backend: str | None = None, **options: Any) -> "Predictor":
    """Load a model package: ``falconet.load("runs/ants-bees").predict("photo.jpg")``."""
    from falconet.runtime.predictor import load as _load

    return _load(path, backend, **options)


__all__ = ["load", "__version__"]
