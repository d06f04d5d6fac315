"""Metrics again from a package's ``evaluation.json``, at another threshold or overlap.

The per-image results written at training time (held-out probabilities, or boxes with scores)
are all the sliders of a Performance page need: moving the probability threshold or the IoU
overlap re-scores them without running any model. Only numpy is imported, so the service can
answer ``performance?threshold=…`` without torch. Training pools its k-fold metrics through the
same function, so the figures it stores and the ones the sliders show cannot drift apart.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from falconet.core.manifest import DETECTION


def metrics_from_rows(rows: Sequence[dict[str, Any]], labels: Sequence[str], task: str,
                      threshold: float = 0.5, overlap: float = 0.5) -> dict[str, Any]:
    """The metrics of ``falconet evaluate`` for the given per-image rows."""
    if task == DETECTION:
        from falconet.data.types import Box
        from falconet.training.metrics.detection import evaluate_detections

        truth = [[Box(b[0], *b[1:5]) for b in r["truth"]] for r in rows]
        predictions = [[tuple(p) for p in r["predicted"]] for r in rows]
        return evaluate_detections(truth, predictions, list(labels), threshold=threshold, overlap=overlap)
    from falconet.training.metrics.classification import classification_metrics

    index = {label: i for i, label in enumerate(labels)}
    targets = np.zeros((len(rows), len(labels)), dtype=bool)
    for r, row in enumerate(rows):
        for tag in row["truth"]:
            if tag in index:
                targets[r, index[tag]] = True
    probabilities = np.array([row["probabilities"] for row in rows], dtype=np.float64).reshape(len(rows), len(labels))
    return classification_metrics(targets, probabilities, labels, task, threshold)


def fold_spread(rows: Sequence[dict[str, Any]], folds: Sequence[Sequence[str]], labels: Sequence[str], task: str,
                threshold: float, overlap: float) -> dict[str, Any]:
    """Standard deviations of precision and recall across k-fold folds, overall and per tag.

    Rows are matched to folds by their image path. Without folds (one held-out split) there is
    no spread to measure, and the caller reports zeros.
    """
    by_image = {row["image"]: row for row in rows}
    fold_metrics = []
    for fold in folds:
        fold_rows = [by_image[i] for i in fold if i in by_image]
        if fold_rows:
            fold_metrics.append(metrics_from_rows(fold_rows, labels, task, threshold, overlap))
    if len(fold_metrics) < 2:
        return {"precision_std": 0.0, "recall_std": 0.0, "per_tag": {}}
    per_tag = {}
    for tag in labels:
        values = [m["per_tag"][tag] for m in fold_metrics if tag in m["per_tag"]]
        if values:
            per_tag[tag] = {"precision_std": float(np.std([v["precision"] for v in values])),
                            "recall_std": float(np.std([v["recall"] for v in values]))}
    return {"precision_std": float(np.std([m["precision"] for m in fold_metrics])),
            "recall_std": float(np.std([m["recall"] for m in fold_metrics])), "per_tag": per_tag}
