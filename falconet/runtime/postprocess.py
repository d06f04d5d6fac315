"""Turning raw model outputs into predictions: the same code for every backend.

The torch-side evaluation calls these functions too, so what the metrics measured is exactly
what the runtime returns.
"""
from __future__ import annotations

import numpy as np

from falconet.core.boxes import class_aware_nms, iou_matrix

#: candidates kept before NMS; enough for 100 detections of many classes
PRE_NMS_TOP_K = 1000
#: Box voting (written into new detection packages' manifests): each box that survives NMS moves
#: to the weighted mean of the same-class candidates overlapping it by at least this IoU, weights
#: score ** BOX_VOTE_POWER. A dense detector predicts each object from many neighbouring
#: locations; their average is better placed than the single best one. One setting for every
#: set: on the quick and advanced models of the three detection benchmarks mAP@0.5:0.95 rose by
#: 0.004-0.09 and mAP@0.5 never fell (benchmarks/box_voting.py, table in benchmarks/RESULTS.md).
BOX_VOTE_IOU = 0.7
#: A high power lets the best-scored (best-localised, as the quality branch predicts) candidates
#: dominate the mean, so a crowd of poor neighbours cannot drag the box.
BOX_VOTE_POWER = 4.0
Detection = tuple[int, float, float, float, float, float]  # class index, score, x1, y1, x2, y2


def decode_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = 0.01, iou: float = 0.45,
                      max_detections: int = 100, top_k: int = PRE_NMS_TOP_K,
                      vote_iou: float | None = None, vote_power: float = BOX_VOTE_POWER) -> list[Detection]:
    """One image's outputs (N, 4) normalised x1y1x2y2 and (N, C) scores -> detections, best first.

    Candidates are all (location, class) pairs with score >= ``score_threshold``, the ``top_k``
    best of them (stable order), then class-aware NMS at ``iou``; with ``vote_iou`` the kept
    boxes are refined by box voting (see :data:`BOX_VOTE_IOU`). Scores are never changed.
    """
    loc, cls = np.nonzero(scores >= score_threshold)
    if loc.size == 0:
        return []
    s = scores[loc, cls]
    if s.size > top_k:
        order = np.argsort(-s, kind="stable")[:top_k]
        loc, cls, s = loc[order], cls[order], s[order]
    b = boxes[loc]
    keep = class_aware_nms(b, s, cls, iou_threshold=iou, max_detections=max_detections)
    placed = b[keep] if vote_iou is None else vote_boxes(b, s, cls, keep, vote_iou, vote_power)
    return [(int(cls[k]), float(s[k]), *(float(v) for v in box)) for k, box in zip(keep, placed)]


def vote_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, keep: np.ndarray,
               vote_iou: float = BOX_VOTE_IOU, power: float = BOX_VOTE_POWER) -> np.ndarray:
    """The kept boxes ``boxes[keep]`` moved to the score-weighted mean of their same-class neighbours.

    A kept box always votes for itself (IoU 1), so the result is defined for every kept box.
    """
    if len(keep) == 0:
        return boxes[keep]
    overlap = iou_matrix(boxes[keep], boxes)  # (K, N)
    voters = (overlap >= vote_iou) & (classes[None, :] == classes[keep][:, None])
    voters[np.arange(len(keep)), keep] = True
    weights = np.where(voters, np.asarray(scores, dtype=np.float64)[None, :] ** power, 0.0)
    weights[np.arange(len(keep)), keep] += 1e-300  # a zero-score box still has itself: no 0/0
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights @ boxes.astype(np.float64)).astype(boxes.dtype)


def rank_classes(probabilities: np.ndarray, threshold: float = 0.0) -> list[tuple[int, float]]:
    """(class index, probability) at or above ``threshold``, highest first, ties by index."""
    order = np.lexsort((np.arange(len(probabilities)), -probabilities))
    return [(int(i), float(probabilities[i])) for i in order if probabilities[i] >= threshold]
