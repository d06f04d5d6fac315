"""Parity: does an exported file answer like the trained network on held-out images?

The comparison runs the full Predictor (same preprocessing, same post-processing) over both
backends, so what is measured is what a user of the exported file gets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from falconet.core.boxes import iou_matrix
from falconet.core.errors import ExportError, FalconetError
from falconet.core.manifest import DETECTION, MULTICLASS, Manifest
from falconet.data.types import Sample
from falconet.runtime.predictor import Predictor

#: fp32 files must agree with torch to this (probabilities / scores)
FP32_TOLERANCE = 1e-4
#: matched detection boxes must overlap at least this much
BOX_IOU_MIN = 0.99
#: NMS is discontinuous: when two overlapping candidates of a tag score within the tolerance of each
#: other, a difference far below it can keep the other one. Such tie flips are counted apart and
#: not held against the file; raw outputs are held to the full tolerance. A flip can cascade (the
#: other box suppresses different neighbours), so 1 % of detections may still differ.
MIN_MATCH_RATE = 0.99


#: fp16 / int8 files are held to the accuracy (multiclass) or mAP (multilabel, detection) that
#: the trained model reaches on the same images, at most this much lower
METRIC_DROP_TOLERANCE = 0.01


def tolerance_for(precision: str, task: str) -> float:
    """fp32: the largest allowed output difference. fp16/int8: the largest allowed metric drop."""
    return FP32_TOLERANCE if precision == "fp32" else METRIC_DROP_TOLERANCE


def parity_samples(package_dir: Path, manifest: Manifest, extra: Path | None = None,
                   limit: int = 200) -> tuple[list[Sample], bool]:
    """The held-out images recorded in the package (or a folder the user names), and whether they
    carry labels (needed to measure the metric drop of fp16/int8 files)."""
    from falconet.training.pipeline import read_dataset

    task = manifest.task if manifest.task == DETECTION else None
    if extra is not None:
        try:
            return read_dataset(Path(extra), task, for_training=False).samples[:limit], True
        except FalconetError:
            from falconet.data.classification import IMAGE_SUFFIXES

            found = sorted(p for p in Path(extra).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            return [Sample(p) for p in found][:limit], False
    split = manifest.training.get("split", {})
    source = Path(split.get("source") or manifest.training.get("data", {}).get("source", "."))
    names = split.get("held_out") or [n for fold in split.get("folds", []) for n in fold]
    wanted = {(source / n).resolve() for n in names}
    samples: list[Sample] = []
    labelled = True
    if wanted:
        data = manifest.training.get("data", {})
        dataset_root = source if split.get("method") == "validation-folder" else Path(data.get("source", source))
        try:
            dataset = read_dataset(dataset_root, task, data.get("format") if task else None, for_training=False)
            samples = [s for s in dataset.samples if Path(s.path).resolve() in wanted]
        except FalconetError:
            samples, labelled = [Sample(p) for p in sorted(wanted) if p.is_file()], False
    if not samples:
        raise ExportError(
            "No held-out images are reachable to measure parity (the training data moved?). "
            "Pass --parity-data DIR with a few representative photos.", code="ParityDataMissing")
    return samples[:limit], labelled


def metric_of(predictor: Predictor, samples: Sequence[Sample], task: str) -> tuple[str, float]:
    """The figure fp16/int8 files are held to: top-1 accuracy (multiclass) or mAP."""
    from falconet.training.pipeline import evaluate_predictor

    metrics, _ = evaluate_predictor(predictor, samples, predictor.labels, task)
    key = "accuracy" if task == MULTICLASS else "map"
    return key, float(metrics[key])


def measure(reference: Predictor, candidate: Predictor, samples: Sequence[Sample],
            tolerance: float = FP32_TOLERANCE, precision: str = "fp32", labelled: bool = True) -> dict[str, Any]:
    """Agreement figures of ``candidate`` against ``reference`` on ``samples``; for fp16/int8 files
    also the metric of both on the labelled samples."""
    task = reference.manifest.task
    images = [s.path for s in samples]
    figures = _detection_parity(reference, candidate, images, tolerance) if task == DETECTION \
        else _classification_parity(reference, candidate, images)
    figures["precision"] = precision
    if precision != "fp32" and labelled:
        key, ref_value = metric_of(reference, samples, task)
        _, value = metric_of(candidate, samples, task)
        figures.update({"metric": key, "reference_metric": ref_value, "metric_value": value,
                        "metric_drop": ref_value - value})
    return figures


def _classification_parity(reference: Predictor, candidate: Predictor, images: Sequence[Path]) -> dict[str, Any]:
    diffs, agree = [], 0
    for start in range(0, len(images), 16):
        chunk = images[start:start + 16]
        ref_in = np.stack([reference.preprocess(p) for p in chunk])
        cand_in = np.stack([candidate.preprocess(p) for p in chunk])
        a = reference.run(ref_in)[0]
        b = candidate.run(cand_in)[0]
        diffs.append(np.abs(a - b).max(axis=1))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
    d = np.concatenate(diffs)
    return {"images": len(images), "top1_agreement": agree / len(images), "max_abs_diff": float(d.max()),
            "mean_abs_diff": float(d.mean())}


def _near_tie(raw_boxes: np.ndarray, raw_scores: np.ndarray, det: Any, nms_iou: float, tolerance: float) -> bool:
    """Was ``det`` kept only by a tie: another overlapping raw candidate of its tag scores within tolerance?"""
    box = np.array([det.bounding_box.to_xyxy()])
    close = np.abs(raw_scores[:, det.tag_index] - det.probability) <= tolerance
    if close.sum() < 2:
        return False
    ious = iou_matrix(box, raw_boxes[close])[0]
    return bool(((ious > nms_iou) & (ious < BOX_IOU_MIN)).any())


def counterpart(det: Any, candidates: Sequence[Any], candidate_boxes: np.ndarray,
                tolerance: float = FP32_TOLERANCE) -> tuple[float, float] | None:
    """(IoU, score difference) of ``det``'s counterpart among ``candidates`` (their boxes x1y1x2y2
    in ``candidate_boxes``), or None when it has none.

    Box voting moves every box kept from one cluster of candidates to nearly the same place, so
    after an NMS flip two different detections of a tag can overlap by more than BOX_IOU_MIN while
    their scores (never changed by voting) differ by far more than the tolerance. The counterpart
    is therefore the candidate of the tag overlapping at least BOX_IOU_MIN whose score is closest,
    and only when that score is within the tolerance: otherwise the candidate is a different
    detection, and ``det`` is unmatched (the raw outputs are held to the tolerance separately).
    """
    same = [j for j, q in enumerate(candidates) if q.tag_index == det.tag_index]
    if not same:
        return None
    ious = iou_matrix(np.array([det.bounding_box.to_xyxy()]), candidate_boxes[same])[0]
    near = [(abs(det.probability - candidates[j].probability), float(iou)) for j, iou in zip(same, ious)
            if iou >= BOX_IOU_MIN]
    if not near:
        return None
    diff, iou = min(near, key=lambda d_i: (d_i[0], -d_i[1]))  # equal scores: the closer box
    return (iou, diff) if diff <= tolerance else None


def _detection_parity(reference: Predictor, candidate: Predictor, images: Sequence[Path],
                      tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    matched = ties = total = 0
    worst_iou, worst_score = 1.0, 0.0
    raw_box = raw_score = 0.0
    for path in images:
        ref_raw = reference.run(reference.preprocess(path)[None])
        cand_raw = candidate.run(candidate.preprocess(path)[None])
        raw_box = max(raw_box, float(np.abs(ref_raw[0] - cand_raw[0]).max()))
        raw_score = max(raw_score, float(np.abs(ref_raw[1] - cand_raw[1]).max()))
        ref = reference.from_outputs(ref_raw, threshold=0.05)[0]
        cand = candidate.from_outputs(cand_raw, threshold=0.05)[0]
        total += len(ref)
        b = np.array([p.bounding_box.to_xyxy() for p in cand]).reshape(-1, 4)  # type: ignore[union-attr]
        for p in ref:
            found = counterpart(p, cand, b, tolerance)
            if found is not None:
                matched += 1
                worst_iou, worst_score = min(worst_iou, found[0]), max(worst_score, found[1])
            elif _near_tie(ref_raw[0][0], ref_raw[1][0], p, reference.iou_threshold, tolerance):
                ties += 1
    return {"images": len(images), "reference_detections": total, "matched_detections": int(matched),
            "nms_tie_flips": int(ties), "match_rate": (matched + ties) / total if total else 1.0,
            "min_iou": worst_iou, "max_score_diff": worst_score,
            "raw_max_box_diff": raw_box, "raw_max_score_diff": raw_score}


def check(figures: dict[str, Any], task: str, tolerance: float = FP32_TOLERANCE) -> list[str]:
    """Problems with the figures (an empty list when within tolerance)."""
    if figures.get("precision", "fp32") != "fp32":
        return _check_reduced(figures, task, tolerance)
    problems = []
    if task == DETECTION:
        if figures["match_rate"] < MIN_MATCH_RATE:
            problems.append(f"only {figures['matched_detections']}/{figures['reference_detections']} detections matched "
                            f"(IoU >= {BOX_IOU_MIN}, score within {tolerance:.0e}; {figures['nms_tie_flips']} more were NMS tie flips)")
        # a matched detection's score is within the tolerance by definition (see counterpart)
        for key in ("raw_max_score_diff", "raw_max_box_diff"):
            if figures[key] > tolerance:
                problems.append(f"{key.replace('_', ' ')} {figures[key]:.2e} > {tolerance:.0e}")
    else:
        if figures["top1_agreement"] < 1.0:
            problems.append(f"top-1 agreement {figures['top1_agreement']:.4f} < 1")
        if figures["max_abs_diff"] > tolerance:
            problems.append(f"max probability difference {figures['max_abs_diff']:.2e} > {tolerance:.0e}")
    return problems


def _check_reduced(figures: dict[str, Any], task: str, tolerance: float) -> list[str]:
    """fp16/int8: judged by the metric drop; without labels, by agreement with the trained model."""
    if "metric_drop" in figures:
        if figures["metric_drop"] > tolerance + 1e-9:
            return [f"{figures['metric']} {figures['metric_value']:.4f} vs {figures['reference_metric']:.4f} for the "
                    f"trained model (drop {figures['metric_drop']:.4f} > {tolerance:g})"]
        return []
    if task == DETECTION:
        ok = figures["match_rate"] >= 1 - tolerance
        return [] if ok else [f"match rate {figures['match_rate']:.4f} < {1 - tolerance:g} (no labels to measure mAP)"]
    ok = figures["top1_agreement"] >= 1 - tolerance
    return [] if ok else [f"top-1 agreement {figures['top1_agreement']:.4f} < {1 - tolerance:g} (no labels to measure accuracy)"]
