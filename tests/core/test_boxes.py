"""Box conversions, IoU and NMS (falconet.core.boxes)."""
from __future__ import annotations

import numpy as np
import pytest

from falconet.core.boxes import (
    class_aware_nms,
    clip_boxes,
    cxcywh_to_xyxy,
    iou_matrix,
    ltwh_to_xyxy,
    nms,
    xyxy_to_cxcywh,
    xyxy_to_ltwh,
)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_conversions_known_values() -> None:
    xyxy = np.array([[0.1, 0.2, 0.5, 0.6]])
    np.testing.assert_allclose(xyxy_to_ltwh(xyxy), [[0.1, 0.2, 0.4, 0.4]])
    np.testing.assert_allclose(xyxy_to_cxcywh(xyxy), [[0.3, 0.4, 0.4, 0.4]])
    np.testing.assert_allclose(ltwh_to_xyxy([[0.1, 0.2, 0.4, 0.4]]), xyxy)
    np.testing.assert_allclose(cxcywh_to_xyxy([[0.3, 0.4, 0.4, 0.4]]), xyxy)


def test_conversions_round_trip_and_shapes() -> None:
    boxes = _random_boxes(np.random.default_rng(0), 50)
    np.testing.assert_allclose(ltwh_to_xyxy(xyxy_to_ltwh(boxes)), boxes, atol=1e-12)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-12)
    assert xyxy_to_ltwh(np.zeros((0, 4))).shape == (0, 4)
    assert xyxy_to_cxcywh([]).shape == (0, 4)
    # integer pixels become floats instead of truncating centres
    assert xyxy_to_cxcywh(np.array([[0, 0, 3, 3]]))[0, 0] == 1.5
    with pytest.raises(ValueError):
        xyxy_to_ltwh(np.zeros((2, 3)))


def test_iou_matrix_values() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], dtype=float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 0, 0]], dtype=float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1 / 7, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.25, 0.0, 0.0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)
    # two zero-area boxes: 0, not NaN
    assert iou_matrix([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0


def test_clip_boxes() -> None:
    clipped = clip_boxes(np.array([[-0.2, 0.5, 1.3, 0.7]]))
    np.testing.assert_allclose(clipped, [[0.0, 0.5, 1.0, 0.7]])
    np.testing.assert_allclose(clip_boxes([[-5, -5, 700, 300]], 640, 480), [[0, 0, 640, 300]])


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    iou = iou_matrix(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if all(iou[i, k] <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_simple_case() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1.05, 1], [2, 2, 3, 3], [0, 0, 1, 1.2]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_matches_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 200)
    scores = rng.uniform(size=200)
    for thr in (0.3, 0.5, 0.7):
        keep = nms(boxes, scores, thr)
        assert keep.tolist() == _reference_nms(boxes, scores, thr)
        assert np.all(np.diff(scores[keep]) <= 0)


def test_class_aware_nms_keeps_overlapping_boxes_of_other_classes() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0.5, 0.5, 0.9, 0.9]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array(["cat", "dog", "cat", "dog"])
    assert class_aware_nms(boxes, scores, classes, 0.45).tolist() == [0, 1, 3]
    assert class_aware_nms(boxes, scores, [0, 1, 0, 1], 0.45, max_detections=2).tolist() == [0, 1]


def test_class_aware_nms_equals_per_class_loop() -> None:
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 300) * 640 - 20  # pixels, some negative
    scores = rng.uniform(size=300)
    classes = rng.integers(0, 5, size=300)
    expected: list[int] = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        expected += idx[nms(boxes[idx], scores[idx], 0.45)].tolist()
    expected = sorted(expected, key=lambda i: -scores[i])[:100]
    assert class_aware_nms(boxes, scores, classes, 0.45, 100).tolist() == expected
