"""The classification network: normalisation + backbone + linear head + softmax/sigmoid.

Normalisation and the final activation live inside the module so the exported graph takes plain
RGB 0-255 and returns probabilities: an app cannot get either step wrong. So does the optional
test-time flip (``flip_tta``): the probabilities are the mean over the image and its mirror image,
computed as one batch of two inside the graph, so every runtime and the training-time evaluation
give the same answer without any code of their own. It costs a second pass through the network;
the accuracy-first domain uses it (the head is trained on mirrored views anyway, so it asks
nothing new of the data).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from falconet.training.backbones import BACKBONES, create_backbone


class ClassifierNet(nn.Module):
    def __init__(self, backbone: str, num_classes: int, multilabel: bool, input_size: int, pretrained: bool = True,
                 flip_tta: bool = False) -> None:
        super().__init__()
        self.flip_tta = flip_tta
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
        return self.backbone.pooled(self.normalise(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalise(x)
        if self.flip_tta:
            # mirrored after the normalisation, so the image input still feeds the model's own
            # mean subtraction first (what the Core ML export checks)
            z = torch.cat([z, torch.flip(z, dims=[3])])
        probabilities = self._activate(self.head(self.dropout(self.backbone.pooled(z))))
        if not self.flip_tta:
            return probabilities
        # the batch of 2N split by a reshape of constants: no shape arithmetic for converters to trace
        return probabilities.reshape(2, -1, self.num_classes).mean(dim=0)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """0-255 RGB to the backbone's input scale (inside the graph, so apps feed plain pixels)."""
        return (x - self.mean) / self.std

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def config(self) -> dict[str, Any]:
        return {
            "kind": "classifier",
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "input_size": self.input_size,
            "flip_tta": self.flip_tta,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ClassifierNet":
        return cls(config["backbone"], config["num_classes"], config["multilabel"], config["input_size"], pretrained=False,
                   flip_tta=config.get("flip_tta", False))
