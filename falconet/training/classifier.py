"""The classification network: normalisation + backbone + linear head + softmax/sigmoid.

Normalisation and the final activation live inside the module so the exported graph takes plain
RGB 0-255 and returns probabilities: an app cannot get either step wrong.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from falconet.training.backbones import BACKBONES, create_backbone


class ClassifierNet(nn.Module):
    def __init__(self, backbone: str, num_classes: int, multilabel: bool, input_size: int, pretrained: bool = True) -> None:
        super().__init__()
        spec = BACKBONES[backbone]
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.input_size = input_size
        self.backbone = create_backbone(backbone, pretrained=pretrained)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(self.backbone.pooled_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.pooled((x - self.mean) / self.std)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def config(self) -> dict[str, Any]:
        return {
            "kind": "classifier",
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "input_size": self.input_size,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ClassifierNet":
        return cls(config["backbone"], config["num_classes"], config["multilabel"], config["input_size"], pretrained=False)
