"""Box voting after NMS: hand-computed cases, and plain NMS when a package predates it."""
from __future__ import annotations

import numpy as np
import pytest

from falconet.runtime.postprocess import decode_detections


def _outputs() -> tuple[np.ndarray, np.ndarray]:
    # four candidate locations, two classes
    boxes = np.array([
        [0.0, 0.0, 1.0, 1.0],   # A: class 0, score 1.0
        [0.0, 0.0, 1.0, 0.8],   # B: class 0, score 0.5, IoU(A) = 0.8 -> votes for A
        [0.0, 0.0, 1.0, 0.9],   # C: class 1, score 0.9, IoU(A) = 0.9 but another class -> no vote for A
        [0.0, 0.0, 1.0, 0.6],   # D: class 0, score 0.4, IoU(A) = 0.6 < 0.7 -> no vote
    ], dtype=np.float32)
    scores = np.zeros((4, 2), dtype=np.float32)
    scores[0, 0], scores[1, 0], scores[2, 1], scores[3, 0] = 1.0, 0.5, 0.9, 0.4
    return boxes, scores


def test_kept_box_moves_to_weighted_mean_of_same_class_neighbours() -> None:
    boxes, scores = _outputs()
    found = decode_detections(boxes, scores, score_threshold=0.01, iou=0.45, vote_iou=0.7, vote_power=4.0)
    assert [(c, s) for c, s, *_ in found] == [(0, 1.0), (1, pytest.approx(0.9))]
    # A's bottom edge: (1.0**4 * 1.0 + 0.5**4 * 0.8) / (1.0**4 + 0.5**4) = 1.05 / 1.0625
    assert found[0][2:] == pytest.approx((0.0, 0.0, 1.0, 1.05 / 1.0625), abs=1e-6)
    # C has no same-class neighbour: it stays where it was
    assert found[1][2:] == pytest.approx((0.0, 0.0, 1.0, 0.9), abs=1e-6)


def test_power_one_is_the_plain_score_weighted_mean() -> None:
    boxes, scores = _outputs()
    found = decode_detections(boxes, scores, vote_iou=0.7, vote_power=1.0)
    assert found[0][5] == pytest.approx((1.0 * 1.0 + 0.5 * 0.8) / 1.5, abs=1e-6)


def test_a_lower_vote_threshold_lets_more_neighbours_vote() -> None:
    boxes, scores = _outputs()
    found = decode_detections(boxes, scores, vote_iou=0.5, vote_power=1.0)
    assert found[0][5] == pytest.approx((1.0 + 0.5 * 0.8 + 0.4 * 0.6) / 1.9, abs=1e-6)


def test_without_voting_boxes_are_those_nms_kept() -> None:
    boxes, scores = _outputs()
    found = decode_detections(boxes, scores, vote_iou=None)
    assert [tuple(round(v, 6) for v in d[2:]) for d in found] == [(0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.9)]


def test_zero_scores_keep_their_own_box() -> None:
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.45]], dtype=np.float32)
    scores = np.zeros((2, 1), dtype=np.float32)
    found = decode_detections(boxes, scores, score_threshold=0.0, vote_iou=0.7)
    assert found[0][2:] == pytest.approx((0.1, 0.1, 0.5, 0.5), abs=1e-6)
