"""Classification metrics as the Performance page shows them.

Precision and recall are taken at a probability threshold (the slider), AP is the area under
each tag's precision/recall curve and does not depend on the threshold, mAP is their mean over
the regular tags. Numpy only: the service recomputes them when the slider moves.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from falconet.core.labels import NEGATIVE


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """All-point interpolated AP: mean of the interpolated precision at each true positive."""
    n_pos = int(positives.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    # interpolate: precision at rank r is the best precision at any rank >= r
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float((precision * hits).sum() / n_pos)


def pr_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) over every distinct score, highest threshold first."""
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], positives[order].astype(np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1 - hits)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    n_pos = max(hits.sum(), 1.0)
    return tp[last] / (tp[last] + fp[last]), tp[last] / n_pos, s[last]


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_metrics(
    targets: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    task: str,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Metrics for N images: ``targets`` is (N, C) 0/1, ``probabilities`` (N, C)."""
    targets = np.asarray(targets, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= threshold
    per_tag: dict[str, dict[str, float]] = {}
    total_tp = total_fp = total_pos = 0
    for c, label in enumerate(labels):
        if label == NEGATIVE:
            continue
        tp = int((predicted[:, c] & targets[:, c]).sum())
        fp = int((predicted[:, c] & ~targets[:, c]).sum())
        pos = int(targets[:, c].sum())
        total_tp, total_fp, total_pos = total_tp + tp, total_fp + fp, total_pos + pos
        per_tag[label] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, pos),
            "ap": average_precision(probabilities[:, c], targets[:, c]),
            "images": pos,
        }
    result: dict[str, Any] = {
        "task": task,
        "images": int(len(targets)),
        "threshold": threshold,
        "precision": _ratio(total_tp, total_tp + total_fp),
        "recall": _ratio(total_tp, total_pos),
        "map": float(np.mean([t["ap"] for t in per_tag.values()])) if per_tag else 0.0,
        "per_tag": per_tag,
    }
    if task.endswith("multiclass"):
        truth = targets.argmax(axis=1)
        guess = probabilities.argmax(axis=1)
        result["accuracy"] = float((truth == guess).mean()) if len(truth) else 0.0
        matrix = np.zeros((len(labels), len(labels)), dtype=int)
        np.add.at(matrix, (truth, guess), 1)
        result["confusion_matrix"] = {"labels": list(labels), "rows_true_columns_predicted": matrix.tolist()}
    return result


def summarize_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Standard deviations across k-fold runs (the API's precisionStdDeviation and friends)."""
    out = {}
    for key in ("precision", "recall", "map", "accuracy"):
        values = [m[key] for m in fold_metrics if key in m]
        if values:
            out[f"{key}_std"] = float(np.std(values))
    return out
