"""How the detection parity check pairs a reference detection with the exported file's.

Box voting puts every box kept from one cluster of candidates in nearly the same place, so a
detection's counterpart cannot be chosen by overlap alone: these cases are built by hand.
"""
from __future__ import annotations

import numpy as np

from falconet.core.prediction import BoundingBox, Prediction
from falconet.exporter.parity import FP32_TOLERANCE, counterpart


def _det(score: float, x1: float, y1: float, x2: float, y2: float, tag: int = 0) -> Prediction:
    return Prediction(f"id{tag}", f"tag{tag}", score, tag, BoundingBox.from_xyxy(x1, y1, x2, y2))


def _boxes(dets: list[Prediction]) -> np.ndarray:
    return np.array([d.bounding_box.to_xyxy() for d in dets]).reshape(-1, 4)


def test_the_counterpart_is_the_overlapping_detection_with_the_same_score() -> None:
    ref = _det(0.6, 0.1, 0.1, 0.5, 0.5)
    # a different detection voted onto (almost) the same place overlaps slightly better
    other = _det(0.6016, 0.1, 0.1, 0.5, 0.5)
    same = _det(0.60000003, 0.1, 0.1, 0.5, 0.5008)
    cands = [other, same]
    found = counterpart(ref, cands, _boxes(cands))
    assert found is not None
    iou, diff = found
    assert 0.99 <= iou < 1.0 and diff < 1e-6


def test_a_different_detection_in_the_same_place_is_no_counterpart() -> None:
    ref = _det(0.6, 0.1, 0.1, 0.5, 0.5)
    cands = [_det(0.6016, 0.1, 0.1, 0.5, 0.5)]  # the reference's own detection was lost to an NMS flip
    assert counterpart(ref, cands, _boxes(cands)) is None
    assert counterpart(ref, cands, _boxes(cands), tolerance=0.01) is not None  # fp16/int8 tolerance


def test_overlap_and_tag_still_decide() -> None:
    ref = _det(0.6, 0.1, 0.1, 0.5, 0.5)
    moved = [_det(0.6, 0.1, 0.1, 0.5, 0.52)]  # IoU 0.95: the box moved
    assert counterpart(ref, moved, _boxes(moved)) is None
    other_tag = [_det(0.6, 0.1, 0.1, 0.5, 0.5, tag=1)]
    assert counterpart(ref, other_tag, _boxes(other_tag)) is None
    assert counterpart(ref, [], np.zeros((0, 4))) is None
    exact = [_det(0.6 + FP32_TOLERANCE / 2, 0.1, 0.1, 0.5, 0.5)]
    found = counterpart(ref, exact, _boxes(exact))
    assert found is not None and found[0] == 1.0 and abs(found[1] - FP32_TOLERANCE / 2) < 1e-9
