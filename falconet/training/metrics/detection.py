"""Object detection metrics as the Performance page shows them, and as COCO defines mAP.

Two kinds of figure, because users need both:

* **Slider figures** (Custom Vision's *probability threshold* and *overlap threshold*):
  precision and recall counting only predictions with score >= ``threshold``, a prediction
  being correct when it matches a not-yet-matched ground-truth box of its tag with IoU >=
  ``overlap``. Reported micro-averaged (all tags pooled) and per tag.
* **Threshold-free figures**: AP per tag and its mean, computed the COCO way so our numbers
  can be compared with published ones: detections of a tag sorted by score over all images,
  matched greedily (highest score first, each to the unmatched ground-truth box with the
  highest IoU, IoU >= t), precision made monotone, then sampled at 101 recall points
  (0, 0.01, ..., 1) and averaged. ``map50`` uses t = 0.5, ``map50_95`` averages t = 0.50,
  0.55, ..., 0.95. There are no area ranges and no crowd boxes.

Choices where COCO leaves room:

* ``max_detections`` keeps each image's highest-scoring predictions *over all tags* (what
  the runtime returns after class-aware NMS). COCO caps per image *and* category; the two
  agree whenever an image has at most ``max_detections`` predictions.
* Tags with no ground-truth box are excluded from every mean (their AP is undefined, not
  zero); their per-tag ``ap*`` values are ``None``. Their false positives still count in
  the micro precision.
* Precision with no predictions is 0.0, recall with no ground truth is 0.0.

Numpy only (no torch), so the service can recompute everything when a slider moves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from falconet.core.boxes import iou_matrix
from falconet.data.types import Box

#: COCO's ten IoU thresholds 0.50:0.05:0.95.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: COCO's 101 recall sampling points.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

PredictionTuple = tuple[str, float, float, float, float, float]


@dataclass
class _TagMatches:
    """Every kept prediction of one tag, over all images, with its match at each IoU."""

    scores: np.ndarray  # (D,)
    matched: np.ndarray  # (T, D) bool, T = len(thresholds)
    gt_boxes: int
    gt_images: int


def _match(det: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of score-sorted detections to ground truth at each IoU threshold."""
    matched = np.zeros((len(thresholds), len(det)), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return matched
    iou = iou_matrix(det, gt)
    for ti, t in enumerate(thresholds):
        free = np.ones(len(gt), dtype=bool)
        limit = min(float(t), 1 - 1e-10)
        for d in range(len(det)):
            candidates = np.where(free, iou[d], -1.0)
            g = int(np.argmax(candidates))
            if candidates[g] >= limit:
                free[g] = False
                matched[ti, d] = True
    return matched


_Piece = tuple[np.ndarray, np.ndarray, int]  # one image's detections of one tag: scores, matched (T, D), its GT boxes


def _image_pieces(
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[Sequence[Any]]],
    labels: Sequence[str],
    thresholds: np.ndarray,
    max_detections: int,
) -> list[dict[int, _Piece]]:
    """Per image, per tag index: the image's matched detections (highest score first) and GT count.

    Matching never crosses images, so any multiset of images is scored by merging their pieces
    (what :func:`resampled_maps` does without matching again)."""
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} prediction lists.")
    index = {label: i for i, label in enumerate(labels)}
    pieces: list[dict[int, _Piece]] = []
    for image, (truth, preds) in enumerate(zip(ground_truth, predictions)):
        gt_by_tag: dict[int, list[tuple[float, float, float, float]]] = {}
        for box in truth:
            if box.label not in index:
                raise ValueError(f"Ground-truth tag {box.label!r} (image {image}) is not in labels.")
            gt_by_tag.setdefault(index[box.label], []).append((box.x1, box.y1, box.x2, box.y2))
        rows = list(preds)
        for row in rows:
            if row[0] not in index:
                raise ValueError(f"Predicted tag {row[0]!r} (image {image}) is not in labels.")
        if rows:
            order = np.argsort(-np.array([float(r[1]) for r in rows]), kind="stable")[:max_detections]
            rows = [rows[i] for i in order]
        det_by_tag: dict[int, list[Sequence[Any]]] = {}
        for row in rows:
            det_by_tag.setdefault(index[row[0]], []).append(row)
        found: dict[int, _Piece] = {}
        for tag in set(gt_by_tag) | set(det_by_tag):
            gt = np.array(gt_by_tag.get(tag, []), dtype=np.float64).reshape(-1, 4)
            dets = det_by_tag.get(tag, [])  # already highest score first
            det = np.array([r[2:6] for r in dets], dtype=np.float64).reshape(-1, 4)
            found[tag] = (np.array([float(r[1]) for r in dets], dtype=np.float64), _match(det, gt, thresholds), len(gt))
        pieces.append(found)
    return pieces


def _merge(pieces: list[dict[int, _Piece]], images: Sequence[int], labels: Sequence[str],
           thresholds: np.ndarray) -> dict[str, _TagMatches]:
    """The pieces of ``images`` (in that order, repeats allowed) pooled per tag, sorted by score."""
    out: dict[str, _TagMatches] = {}
    for i, label in enumerate(labels):
        mine = [pieces[image][i] for image in images if i in pieces[image]]
        s = np.concatenate([p[0] for p in mine]) if mine else np.zeros(0)
        m = np.concatenate([p[1] for p in mine], axis=1) if mine else np.zeros((len(thresholds), 0), dtype=bool)
        order = np.argsort(-s, kind="mergesort")  # stable: ties keep image order, as COCO does
        gt_images = sum(1 for p in mine if p[2])
        out[label] = _TagMatches(s[order], m[:, order], sum(p[2] for p in mine), gt_images)
    return out


def _collect(
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[Sequence[Any]]],
    labels: Sequence[str],
    thresholds: np.ndarray,
    max_detections: int,
) -> dict[str, _TagMatches]:
    pieces = _image_pieces(ground_truth, predictions, labels, thresholds, max_detections)
    return _merge(pieces, range(len(pieces)), labels, thresholds)


def _average_precision(matched: np.ndarray, gt_boxes: int) -> float:
    """101-point interpolated AP of score-sorted match flags (COCO's ``accumulate``)."""
    if gt_boxes == 0:
        return float("nan")
    if matched.size == 0:
        return 0.0
    tp = np.cumsum(matched, dtype=np.float64)
    fp = np.cumsum(~matched, dtype=np.float64)
    recall = tp / gt_boxes
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else 0.0


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else value


def evaluate_detections(
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[PredictionTuple]],
    labels: Sequence[str],
    threshold: float = 0.5,
    overlap: float = 0.5,
    max_detections: int = 100,
) -> dict[str, Any]:
    """Precision/recall at the sliders, per-tag AP, mAP@0.5 and mAP@0.5:0.95.

    ``ground_truth[i]`` are image i's boxes; ``predictions[i]`` its predictions as
    ``(label, score, x1, y1, x2, y2)`` in the same normalised frame. IoU does not change when
    both axes are scaled, so normalised and pixel coordinates give the same figures.
    Returns plain Python floats (JSON-ready); see the module docstring for the definitions.
    """
    thresholds = np.concatenate([IOU_THRESHOLDS, [float(overlap)]])
    tags = _collect(ground_truth, predictions, labels, thresholds, max_detections)
    per_tag: dict[str, dict[str, Any]] = {}
    tp_all = fp_all = gt_all = 0
    ap50s, ap5095s, ap_overlaps = [], [], []
    for label, t in tags.items():
        aps = [_average_precision(t.matched[i], t.gt_boxes) for i in range(len(thresholds))]
        ap50, ap5095, ap_over = aps[0], float(np.mean(aps[:10])), aps[-1]
        above = t.scores >= threshold
        tp = int(np.count_nonzero(t.matched[-1] & above))
        fp = int(np.count_nonzero(above)) - tp
        tp_all, fp_all, gt_all = tp_all + tp, fp_all + fp, gt_all + t.gt_boxes
        ap50s.append(ap50)
        ap5095s.append(ap5095)
        ap_overlaps.append(ap_over)
        per_tag[label] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, t.gt_boxes),
            "ap": _none_if_nan(ap_over),
            "ap50": _none_if_nan(ap50),
            "ap50_95": _none_if_nan(ap5095),
            "images": t.gt_images,
            "boxes": t.gt_boxes,
            "predictions": int(np.count_nonzero(above)),
        }
    map50 = _mean(ap50s)
    return {
        "map50": map50,
        "map50_95": _mean(ap5095s),
        "map": map50,
        "map_overlap": _mean(ap_overlaps),
        "precision": _ratio(tp_all, tp_all + fp_all),
        "recall": _ratio(tp_all, gt_all),
        "per_tag": per_tag,
        "images": len(ground_truth),
        "boxes": gt_all,
        "threshold": float(threshold),
        "overlap": float(overlap),
        "max_detections": int(max_detections),
    }


def resampled_maps(
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[PredictionTuple]],
    labels: Sequence[str],
    draws: np.ndarray,
    max_detections: int = 100,
) -> np.ndarray:
    """mAP@0.5 and mAP@0.5:0.95 of resamples of the images: row k scores images ``draws[k]``.

    For bootstrap comparisons: two models scored on the same ``draws`` give paired figures, so
    the spread of their difference says whether one is better beyond what the choice of images
    explains. Each image is matched once; a resample only pools its images' matches. Returns an
    array of shape (len(draws), 2).
    """
    pieces = _image_pieces(ground_truth, predictions, labels, IOU_THRESHOLDS, max_detections)
    out = np.zeros((len(draws), 2))
    for k, images in enumerate(np.asarray(draws)):
        tags = _merge(pieces, images, labels, IOU_THRESHOLDS)
        aps = np.array([[_average_precision(t.matched[i], t.gt_boxes) for i in range(len(IOU_THRESHOLDS))]
                        for t in tags.values()])
        out[k] = (_mean(list(aps[:, 0])), _mean(list(aps.mean(axis=1))))
    return out


def detection_pr_curves(
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[PredictionTuple]],
    labels: Sequence[str],
    overlap: float = 0.5,
    max_detections: int = 100,
) -> dict[str, dict[str, np.ndarray]]:
    """Per tag: ``precision``, ``recall`` and ``thresholds`` at every distinct score.

    Highest threshold first; point k is what the sliders would show with the probability
    threshold at ``thresholds[k]`` and the given ``overlap``. Raw (not interpolated) values,
    for plotting; a tag without predictions gets empty arrays.
    """
    tags = _collect(ground_truth, predictions, labels, np.array([float(overlap)]), max_detections)
    curves: dict[str, dict[str, np.ndarray]] = {}
    for label, t in tags.items():
        hits = t.matched[0]
        if len(hits) == 0:
            empty = np.zeros(0)
            curves[label] = {"precision": empty, "recall": empty, "thresholds": empty}
            continue
        tp = np.cumsum(hits, dtype=np.float64)
        fp = np.cumsum(~hits, dtype=np.float64)
        last = np.r_[np.nonzero(np.diff(t.scores))[0], len(t.scores) - 1]  # last of each distinct score
        curves[label] = {
            "precision": tp[last] / (tp[last] + fp[last]),
            "recall": tp[last] / t.gt_boxes if t.gt_boxes else np.zeros(len(last)),
            "thresholds": t.scores[last],
        }
    return curves


__all__ = ["evaluate_detections", "detection_pr_curves", "resampled_maps", "IOU_THRESHOLDS", "RECALL_POINTS"]
