"""Domains: named recipes. A domain says honestly what it is: backbone, input size, schedule.

None of these backbones was pretrained on anything but ImageNet-1k; a domain's name describes
the trade-off it makes (size and speed against accuracy), not special data it has seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from falconet.core.errors import FalconetError


@dataclass(frozen=True)
class Domain:
    name: str
    kind: str  # "classification" or "detection"
    backbone: str
    input_size: int
    summary: str
    compact: bool = True
    #: quick mode: augmented views per image for the frozen-feature head
    quick_views: int = 2
    #: average the outputs for the image and its mirror image (in the graph; twice the inference
    #: cost): a class's probabilities, or a detector's per-location boxes and scores
    flip_tta: bool = False
    #: advanced mode default budget in seconds when none is given
    default_budget_s: float = 600.0
    export_targets: tuple[str, ...] = ("onnx",)
    #: Custom Vision domain id this one stands in for (the service's catalogue uses it)
    custom_vision_id: str = ""
    extra: dict = field(default_factory=dict)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in [
        Domain(
            "general-compact", "classification", "efficientnet-lite0", 224,
            "EfficientNet-Lite0 at 224 px (ImageNet-1k weights): small (~13 MB fp32) and fast on CPUs "
            "and phones; exportable to every target. The default.",
            custom_vision_id="0732100f-1a38-4e49-a514-c9b44c697ab5",
        ),
        Domain(
            "general-compact-mobilenet", "classification", "mobilenet-v2", 224,
            "MobileNetV2 at 224 px (ImageNet-1k weights): the fastest and smallest (~9 MB fp32); "
            "use it on slow devices.",
        ),
        Domain(
            # 300 px, not the 260 px Lite2 was trained at: ImageNet training crops magnify objects,
            # so a frozen backbone sees them at their training size from a ~1.15x larger whole
            # photo (the train/test resolution discrepancy). Frozen-feature heads on hymenoptera,
            # 260 -> 300: out-of-fold top-1 on the training photos 97.55 -> 97.55 %, val 96.08 ->
            # 97.39 % (benchmarks/RESULTS.md). Measured once by hand: Lite0 and MobileNetV2 at 256
            # instead of 224 gained 0.4 and 1.6 points out of fold; the compact domains keep 224.
            "general", "classification", "efficientnet-lite2", 300,
            "EfficientNet-Lite2 (ImageNet-1k weights, trained at 260 px) run at 300 px, with a "
            "test-time mirror view: more accurate, about 6x the compute of general-compact; still "
            "exportable.",
            compact=False, flip_tta=True,
            custom_vision_id="ee85a74c-405e-4adc-bb47-ffa8ca0c9f31",
        ),
        Domain(
            "general-compact-detection", "detection", "efficientnet-lite0", 320,
            "Anchor-free single-stage detector on EfficientNet-Lite0 at 320 px (ImageNet-1k backbone "
            "weights, detection head trained from your boxes); exportable.",
            custom_vision_id="a27d5ca5-bb19-49d8-a70a-fec086c47f5b",
        ),
        Domain(
            # EfficientNet-Lite2 at 352 px with the test-time mirror view (see
            # falconet.training.detector). Lite2's extra cost is mostly in stages that stay frozen,
            # so at 352 px it trains 262 steps where general-compact trains 385 in the same CPU
            # time (Lite2 at 416: ~140, too few). Raccoon, fixed steps, seeds 0 and 1
            # (benchmarks/results/detector_ab, round 11), mAP@0.5 / mAP@0.5:0.95: 0.956 / 0.584 and
            # 0.970 / 0.598, against general-compact's 0.951 / 0.573 and 0.955 / 0.574 (single
            # view) on the same seeds; the mirror view alone added 0.024 each (paired, same
            # weights). Lite2 at 320 px scored 0.949 / 0.601 and 0.955 / 0.589, but this domain's
            # input is meant to be finer than the compact one's. Inference at 352 px is not measured
            # yet; at 416 px both views took 129 ms against general-compact's 25 ms (onnxruntime,
            # 1 thread, benchmarks/RESULTS.md).
            "general-detection", "detection", "efficientnet-lite2", 352,
            "The same detector on EfficientNet-Lite2 at 352 px with a test-time mirror view: a "
            "stronger backbone, a finer input and tighter boxes, for several times the inference time "
            "of general-compact.",
            compact=False, flip_tta=True,
            custom_vision_id="da2e3a8a-40a5-4171-82f4-58522f70fbc1",
        ),
    ]
}

#: The names users type (``--domain general-compact``) map per task kind to a domain.
_ALIASES = {
    ("detection", "general-compact"): "general-compact-detection",
    ("detection", "general"): "general-detection",
}


def get_domain(name: str, kind: str) -> Domain:
    """The domain called ``name`` for a classification or detection project."""
    resolved = _ALIASES.get((kind, name), name)
    domain = DOMAINS.get(resolved)
    if domain is None or domain.kind != kind:
        known = sorted({n for (k, n) in _ALIASES if k == kind} | {d.name for d in DOMAINS.values() if d.kind == kind})
        raise FalconetError(f"Unknown {kind} domain {name!r}; choose one of: {', '.join(known)}.", code="BadRequestDomainInvalid", status=400)
    return domain
