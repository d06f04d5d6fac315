"""Run the trained torch network as a runtime backend.

Training-time evaluation goes through the same Predictor as every exported file, with this
backend underneath; the exporter compares the other backends against it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from falconet.core.manifest import Manifest


class TorchBackend:
    name = "torch"
    layout = "NCHW"
    description = f"torch {torch.__version__} (fp32, CPU)"

    def __init__(self, package_dir: Path | None, manifest: Manifest, *, model: torch.nn.Module | None = None) -> None:
        if model is None:
            from falconet.training.weights import load_model

            model = load_model(Path(package_dir))  # type: ignore[arg-type]
        self.model = model.eval()

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outputs]
