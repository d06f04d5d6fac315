"""weights.pt: the trained network with the config needed to rebuild it, for retraining and export."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = "weights.pt"


def save_weights(model: nn.Module, package_dir: Path) -> Path:
    path = Path(package_dir) / WEIGHTS
    torch.save({"config": model.config(), "state_dict": model.state_dict()}, path)
    return path


def load_model(package_dir: Path) -> nn.Module:
    """Rebuild the network from weights.pt (no ImageNet weights are needed for that)."""
    data = torch.load(Path(package_dir) / WEIGHTS, map_location="cpu", weights_only=True)
    config = data["config"]
    if config.get("kind") == "classifier":
        from falconet.training.classifier import ClassifierNet

        model: nn.Module = ClassifierNet.from_config(config)
    else:
        from falconet.training.detector import Detector

        model = Detector.from_config(config)
    model.load_state_dict(data["state_dict"])
    return model.eval()
