"""Turning raw model outputs into predictions: the same code for every backend.

The torch-side evaluation calls these functions too, so what the metrics measured is exactly
what the runtime returns.
"""
from __future__ import annotations

import numpy as np

from falconet.core.boxes import class_aware_nms

#: candidates kept before NMS; enough for 100 detections of many classes
PRE_NMS_TOP_K = 1000
Detection = tuple[int, float, float, float, float, float]  # class index, score, x1, y1, x2, y2


def decode_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = 0.01, iou: float = 0.45,
                      max_detections: int = 100, top_k: int = PRE_NMS_TOP_K) -> list[Detection]:
    """One image's outputs (N, 4) normalised x1y1x2y2 and (N, C) scores -> detections, best first.

    Candidates are all (location, class) pairs with score >= ``score_threshold``, the ``top_k``
    best of them (stable order), then class-aware NMS at ``iou``.
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
    return [(int(cls[k]), float(s[k]), *(float(v) for v in b[k])) for k in keep]


def rank_classes(probabilities: np.ndarray, threshold: float = 0.0) -> list[tuple[int, float]]:
    """(class index, probability) at or above ``threshold``, highest first, ties by index."""
    order = np.lexsort((np.arange(len(probabilities)), -probabilities))
    return [(int(i), float(probabilities[i])) for i in order if probabilities[i] >= threshold]
