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
            # Lite2 at the same 320 px costs 1.45x the inference (ONNX, 1 thread: 24.6 against
            # 17.0 ms; 17.8 against 12.2 MB) and ~1.2x per training step. It led a fixed-step A/B
            # on raccoon (mAP@0.5:0.95 0.585 against 0.565, two and four seeds), but two 540 s
            # run.py raccoon runs scored 0.943 / 0.555 and 0.941 / 0.580 (~465 steps) against
            # Lite0's 0.946 / 0.585 (five runs, ~600 steps) on the same CPU, 2026-11-29. Kept Lite0.
            "general-compact-detection", "detection", "efficientnet-lite0", 320,
            "Anchor-free single-stage detector on EfficientNet-Lite0 at 320 px (ImageNet-1k backbone "
            "weights, detection head trained from your boxes); exportable.",
            custom_vision_id="a27d5ca5-bb19-49d8-a70a-fec086c47f5b",
        ),
        Domain(
            # Lite0 at 384 px with the test-time mirror view (see falconet.training.detector).
            # On 2 CPU cores a 10-minute budget is step-bound, and until 2026-12-07 this domain
            # was Lite2 at 416 px: ~140 steps in 9 minutes, raccoon 0.951 / 0.519, fruit 0.848 /
            # 0.533 (mAP@0.5 / mAP@0.5:0.95), below general-compact's 0.948 / 0.575 (15 runs)
            # and 0.913 / 0.592 (6 runs). Lite2 at 320 and 352 px did no better on raccoon (0.942 /
            # 0.568 and 0.939 / 0.569, two runs each). Lite0 at 384 px (1.44x the pixels of 320)
            # trains ~320 steps in the same time on the Xeon VM: raccoon 0.966 / 0.571 (0.961 /
            # 0.575, 0.971 / 0.568, 0.966 / 0.569), fruit 0.914 / 0.596 (0.917 / 0.589, 0.911 /
            # 0.604), 2026-12-07: mAP@0.5 up on raccoon, the rest level with general-compact. So
            # this domain buys a finer input and the mirror view, not a bigger backbone. The mirror
            # view scored paired on the same weights of compact detectors of the current recipe
            # (benchmarks/results: detector_ab round 10 and weight_averaging; the last, a run.py
            # package of 2026-12-07): raccoon mAP@0.5:0.95 +0.008, +0.011, +0.004, +0.016, -0.009,
            # +0.007, +0.012 (mean +0.007), fruit +0.009, +0.013, +0.016. It costs a second pass,
            # so only this domain pays it. Inference (benchmarks/RESULTS.md, exports; onnxruntime,
            # 1 / 2 threads, Xeon VM): 71 / 39 ms against general-compact's 21 / 12 ms.
            "general-detection", "detection", "efficientnet-lite0", 384,
            "The same detector at 384 px with a test-time mirror view: a finer input for small "
            "objects and boxes averaged over two views, for about 3.4x the inference time of "
            "general-compact and about 30 % fewer training steps in the same budget.",
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
