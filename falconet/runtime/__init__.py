"""Torch-free inference: ``falconet.runtime.load(path)`` -> Predictor.

The Predictor (numpy, Pillow, the backends) is imported on first use, not with the package:
the CLI registers ``falconet stream`` and ``bench`` from :mod:`falconet.runtime.commands`, and
``falconet --help`` should not pay for numpy and Pillow (about 0.2 s here, 20 s under qemu).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from falconet.runtime.predictor import Predictor, load

__all__ = ["Predictor", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from falconet.runtime import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'falconet.runtime' has no attribute {name!r}")
