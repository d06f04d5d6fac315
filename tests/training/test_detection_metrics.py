"""Detection metrics: hand-computed cases and a cross-check against pycocotools."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from falconet.data.types import Box
from falconet.training.metrics.detection import detection_pr_curves, evaluate_detections, resampled_maps


def test_perfect_predictions_score_one() -> None:
    gt = [[Box("a", 0.1, 0.1, 0.4, 0.4), Box("b", 0.5, 0.5, 0.9, 0.9)], [Box("a", 0.2, 0.2, 0.6, 0.7)]]
    preds = [[("a", 0.9, 0.1, 0.1, 0.4, 0.4), ("b", 0.8, 0.5, 0.5, 0.9, 0.9)], [("a", 0.7, 0.2, 0.2, 0.6, 0.7)]]
    result = evaluate_detections(gt, preds, ["a", "b"])
    assert result["map50"] == pytest.approx(1.0)
    assert result["map50_95"] == pytest.approx(1.0)
    assert result["map"] == result["map50"]
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["per_tag"]["a"] == {
        "precision": 1.0, "recall": 1.0, "ap": pytest.approx(1.0), "ap50": pytest.approx(1.0),
        "ap50_95": pytest.approx(1.0), "images": 2, "boxes": 2, "predictions": 2,
    }
    assert result["images"] == 2 and result["threshold"] == 0.5 and result["overlap"] == 0.5


def test_hand_computed_ap_and_slider_figures() -> None:
    # One tag, 2 ground-truth boxes in one image; predictions by score: TP, FP, TP.
    gt = [[Box("a", 0.0, 0.0, 0.2, 0.2), Box("a", 0.5, 0.5, 0.7, 0.7)]]
    preds = [[
        ("a", 0.9, 0.0, 0.0, 0.2, 0.2),      # TP
        ("a", 0.8, 0.8, 0.0, 1.0, 0.2),      # FP (no overlap)
        ("a", 0.3, 0.5, 0.5, 0.7, 0.7),      # TP
    ]]
    result = evaluate_detections(gt, preds, ["a"], threshold=0.5)
    # PR points: (r=.5, p=1), (r=.5, p=.5), (r=1, p=2/3); interpolated: p=1 for r<=.5, 2/3 above.
    expected_ap = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert result["per_tag"]["a"]["ap50"] == pytest.approx(expected_ap)
    assert result["map50"] == pytest.approx(expected_ap)
    # At probability threshold 0.5: predictions 0.9 (TP) and 0.8 (FP).
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)
    low = evaluate_detections(gt, preds, ["a"], threshold=0.1)
    assert low["precision"] == pytest.approx(2 / 3) and low["recall"] == 1.0


def test_overlap_slider_and_iou_thresholds() -> None:
    # The prediction overlaps its box with IoU 0.6: a hit at 0.5, a miss at 0.7.
    gt = [[Box("a", 0.0, 0.0, 0.5, 1.0)]]
    preds = [[("a", 0.9, 0.0, 0.0, 0.3, 1.0)]]  # IoU = 0.3 / 0.5 = 0.6
    at50 = evaluate_detections(gt, preds, ["a"], overlap=0.5)
    at70 = evaluate_detections(gt, preds, ["a"], overlap=0.7)
    assert at50["recall"] == 1.0 and at50["per_tag"]["a"]["ap"] == pytest.approx(1.0)
    assert at70["recall"] == 0.0 and at70["per_tag"]["a"]["ap"] == 0.0
    # hits at IoU 0.50, 0.55, 0.60 of the ten thresholds
    assert at50["map50_95"] == pytest.approx(0.3)


def test_duplicates_tags_without_truth_and_empty_predictions() -> None:
    gt = [[Box("a", 0.1, 0.1, 0.5, 0.5)], []]
    preds = [
        [("a", 0.9, 0.1, 0.1, 0.5, 0.5), ("a", 0.8, 0.1, 0.1, 0.5, 0.5)],  # second is a duplicate: FP
        [("b", 0.95, 0.0, 0.0, 0.3, 0.3)],  # tag b has no ground truth
    ]
    result = evaluate_detections(gt, preds, ["a", "b", "c"])
    assert result["per_tag"]["a"]["ap50"] == pytest.approx(1.0)
    assert result["per_tag"]["b"]["ap50"] is None and result["per_tag"]["c"]["ap"] is None
    assert result["map50"] == pytest.approx(1.0)  # b and c excluded from the mean
    assert result["precision"] == pytest.approx(1 / 3)  # b's false positive counts
    assert result["per_tag"]["c"]["precision"] == 0.0 and result["per_tag"]["c"]["recall"] == 0.0
    nothing = evaluate_detections(gt, [[], []], ["a"])
    assert nothing["map50"] == 0.0 and nothing["precision"] == 0.0 and nothing["recall"] == 0.0


def test_max_detections_keeps_highest_scores_per_image() -> None:
    gt = [[Box("a", 0.0, 0.0, 0.2, 0.2)]]
    preds = [[("a", 0.1, 0.0, 0.0, 0.2, 0.2)] + [("a", 0.5, 0.6, 0.6, 0.9, 0.9)] * 3]
    assert evaluate_detections(gt, preds, ["a"], max_detections=3)["map50"] == 0.0
    assert evaluate_detections(gt, preds, ["a"], max_detections=4)["map50"] > 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        evaluate_detections([[Box("x", 0, 0, 1, 1)]], [[]], ["a"])
    with pytest.raises(ValueError):
        evaluate_detections([[]], [[("x", 0.5, 0, 0, 1, 1)]], ["a"])
    with pytest.raises(ValueError):
        evaluate_detections([[]], [], ["a"])


def test_pr_curves() -> None:
    gt = [[Box("a", 0.0, 0.0, 0.2, 0.2), Box("a", 0.5, 0.5, 0.7, 0.7)]]
    preds = [[("a", 0.9, 0.0, 0.0, 0.2, 0.2), ("a", 0.8, 0.8, 0.0, 1.0, 0.2), ("a", 0.3, 0.5, 0.5, 0.7, 0.7)]]
    curves = detection_pr_curves(gt, preds, ["a", "b"])
    np.testing.assert_allclose(curves["a"]["thresholds"], [0.9, 0.8, 0.3])
    np.testing.assert_allclose(curves["a"]["precision"], [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(curves["a"]["recall"], [0.5, 0.5, 1.0])
    assert len(curves["b"]["precision"]) == 0


def _synthetic(seed: int) -> tuple[list[list[Box]], list[list[tuple]], list[str], list[tuple[int, int]]]:
    """Images with several tags, jittered true positives, misclassified and random false positives."""
    rng = np.random.default_rng(seed)
    labels = ["cat", "dog", "bird", "fish"]
    gts, preds, sizes = [], [], []
    for _ in range(25):
        sizes.append((int(rng.integers(200, 800)), int(rng.integers(200, 800))))
        truth, guess = [], []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 0.7, size=2)
            w, h = rng.uniform(0.05, 0.3, size=2)
            label = labels[int(rng.integers(0, 3))]  # "fish" never has ground truth
            truth.append(Box(label, x, y, x + w, y + h))
            if rng.uniform() < 0.85:
                jitter = rng.normal(0, 0.03, size=4) * np.array([w, h, w, h]) * 3
                bx = np.clip(np.array([x, y, x + w, y + h]) + jitter, 0, 1)
                tag = label if rng.uniform() < 0.9 else labels[int(rng.integers(0, 4))]
                guess.append((tag, float(rng.uniform(0.05, 1.0)), *map(float, bx)))
            if rng.uniform() < 0.2:  # a duplicate detection
                guess.append((label, float(rng.uniform(0.05, 0.6)), x, y, x + w * 0.88, y + h))
        for _ in range(int(rng.integers(0, 4))):  # background false positives
            x, y = rng.uniform(0, 0.8, size=2)
            guess.append((labels[int(rng.integers(0, 4))], float(rng.uniform(0.01, 0.7)), x, y, x + 0.15, y + 0.15))
        gts.append(truth)
        preds.append(guess)
    return gts, preds, labels, sizes


def _pycocotools_map(gts, preds, labels, sizes) -> tuple[float, float]:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {label: i + 1 for i, label in enumerate(labels)}
    images, anns, dets = [], [], []
    for image_id, ((w, h), truth, guess) in enumerate(zip(sizes, gts, preds), start=1):
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        for b in truth:
            bw, bh = (b.x2 - b.x1) * w, (b.y2 - b.y1) * h
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat[b.label],
                         "bbox": [b.x1 * w, b.y1 * h, bw, bh], "area": bw * bh, "iscrowd": 0})
        for label, score, x1, y1, x2, y2 in guess:
            dets.append({"image_id": image_id, "category_id": cat[label], "score": score,
                         "bbox": [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": i, "name": n} for n, i in cat.items()]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        result = coco.loadRes(dets)
        ev = COCOeval(coco, result, "bbox")
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]  # T x R x K
    per_class_5095 = [precision[:, :, k] for k in range(precision.shape[2])]
    valid = [p for p in per_class_5095 if (p > -1).all()]
    map5095 = float(np.mean([p.mean() for p in valid]))
    map50 = float(np.mean([p[0].mean() for p in valid]))
    return map50, map5095


@pytest.mark.parametrize("seed", range(5))
def test_matches_pycocotools(seed: int) -> None:
    gts, preds, labels, sizes = _synthetic(seed)
    expected50, expected5095 = _pycocotools_map(gts, preds, labels, sizes)
    result = evaluate_detections(gts, preds, labels)
    assert result["per_tag"]["fish"]["ap50"] is None
    assert 0.2 < result["map50"] < 0.99  # the case is not trivial
    assert result["map50"] == pytest.approx(expected50, abs=1e-3)
    assert result["map50_95"] == pytest.approx(expected5095, abs=1e-3)


def test_resampled_maps_equal_scoring_the_resampled_images() -> None:
    gts, preds, labels, _ = _synthetic(3)
    rng = np.random.default_rng(0)
    draws = np.vstack([np.arange(len(gts)), rng.integers(0, len(gts), size=(3, len(gts)))])
    maps = resampled_maps(gts, preds, labels, draws)
    assert maps.shape == (4, 2)
    for row, images in zip(maps, draws):
        # the same images (repeats included) evaluated from scratch
        direct = evaluate_detections([gts[i] for i in images], [preds[i] for i in images], labels)
        assert row[0] == pytest.approx(direct["map50"], abs=1e-12)
        assert row[1] == pytest.approx(direct["map50_95"], abs=1e-12)
    with pytest.raises(ValueError):
        resampled_maps(gts, preds[:-1], labels, draws)
