import numpy as np
import pytest

from falconet.core.labels import NEGATIVE
from falconet.training.metrics.classification import average_precision, classification_metrics


def test_average_precision_hand_computed() -> None:
    # ranking: P N P N  -> precision at the hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    # interpolation: N P P -> precisions 1/2, 2/3 ; interpolated 2/3, 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert average_precision(scores, np.zeros(4)) == 0.0


def test_multiclass_metrics_hand_computed() -> None:
    labels = ["cat", "dog", NEGATIVE]
    targets = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    m = classification_metrics(targets, probs, labels, "classification-multiclass", threshold=0.5)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_tag"]["cat"] == {"precision": 1.0, "recall": 0.5, "ap": pytest.approx(1.0), "images": 2}
    assert m["per_tag"]["dog"]["precision"] == 0.5 and m["per_tag"]["dog"]["recall"] == 1.0
    assert NEGATIVE not in m["per_tag"]
    # micro: TP 2 (cat1, dog) FP 1 (dog on cat2) positives 3
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"]["rows_true_columns_predicted"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_threshold_moves_precision_and_recall_not_ap() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.6, 0.4]])
    low = classification_metrics(targets, probs, ["a", "b"], "classification-multilabel", threshold=0.3)
    high = classification_metrics(targets, probs, ["a", "b"], "classification-multilabel", threshold=0.7)
    assert low["per_tag"]["a"]["recall"] == 1.0 and high["per_tag"]["a"]["recall"] == 0.5
    assert low["map"] == high["map"]
    assert "accuracy" not in low
