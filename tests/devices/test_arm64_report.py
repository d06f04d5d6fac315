"""The arm64 log's int8 detection rule: tags identical, boxes within a millionth (box voting)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "arm64"))
import report  # noqa: E402


def _result(*detections: tuple[str, float, tuple[float, float, float, float]]) -> dict:
    return {"predictions": [{"tagName": tag, "probability": p,
                             "boundingBox": dict(zip(("left", "top", "width", "height"), box))}
                            for tag, p, box in detections]}


def test_float_noise_in_voted_boxes_is_the_same_box_but_a_moved_box_or_tag_is_not() -> None:
    x86 = _result(("disc", 0.7, (0.45, 0.19, 0.42, 0.42)), ("square", 0.1, (0.1, 0.1, 0.2, 0.2)))
    noise = _result(("disc", 0.7, (0.45 + 3e-9, 0.19, 0.42, 0.42)), ("square", 0.1, (0.1, 0.1, 0.2, 0.2 - 2e-8)))
    moved = _result(("disc", 0.7, (0.45, 0.19, 0.42, 0.42)), ("square", 0.1, (0.1, 0.1, 0.2, 0.2 + 1e-4)))
    swapped = _result(("square", 0.7, (0.45, 0.19, 0.42, 0.42)), ("disc", 0.1, (0.1, 0.1, 0.2, 0.2)))
    below_floor = _result(("disc", 0.7, (0.45, 0.19, 0.42, 0.42)), ("square", 0.01, (0.9, 0.9, 0.05, 0.05)))
    assert not report._kept_differ(x86, noise)
    assert report._kept_differ(x86, moved)
    assert report._kept_differ(x86, swapped)
    assert report._kept_differ(x86, below_floor)  # a detection above the floor is missing
