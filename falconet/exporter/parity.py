"""Parity: does an exported file answer like the trained network on held-out images?

The comparison runs the full Predictor (same preprocessing, same post-processing) over both
backends, so what is measured is what a user of the exported file gets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from falconet.core.boxes import iou_matrix
from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest
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


def parity_images(package_dir: Path, manifest: Manifest, extra: Path | None = None, limit: int = 200) -> list[Path]:
    """The held-out images recorded in the package (or a folder the user names)."""
    if extra is not None:
        from falconet.data.classification import IMAGE_SUFFIXES

        found = sorted(p for p in Path(extra).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        split = manifest.training.get("split", {})
        source = Path(split.get("source") or manifest.training.get("data", {}).get("source", "."))
        names = split.get("held_out") or [n for fold in split.get("folds", []) for n in fold]
        found = [p for p in (source / n if not Path(n).is_absolute() else Path(n) for n in names) if p.is_file()]
    if not found:
        raise ExportError(
            "No held-out images are reachable to measure parity (the training data moved?). "
            "Pass --parity-data DIR with a few representative photos.", code="ParityDataMissing")
    return found[:limit]


def measure(reference: Predictor, candidate: Predictor, images: Sequence[Path],
            tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    """Agreement figures of ``candidate`` against ``reference`` on ``images``."""
    if reference.manifest.task == DETECTION:
        return _detection_parity(reference, candidate, images, tolerance)
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
        ref = reference.predict(path, threshold=0.05)
        cand = candidate.predict(path, threshold=0.05)
        total += len(ref)
        b = np.array([p.bounding_box.to_xyxy() for p in cand]).reshape(-1, 4)  # type: ignore[union-attr]
        for p in ref:
            same = [j for j, q in enumerate(cand) if q.tag_index == p.tag_index]
            best = -1.0
            if same:
                ious = iou_matrix(np.array([p.bounding_box.to_xyxy()]), b[same])[0]  # type: ignore[union-attr]
                k = int(ious.argmax())
                best = float(ious[k])
            if best >= BOX_IOU_MIN:
                matched += 1
                worst_iou = min(worst_iou, best)
                worst_score = max(worst_score, abs(p.probability - cand[same[k]].probability))
            elif _near_tie(ref_raw[0][0], ref_raw[1][0], p, reference.iou_threshold, tolerance):
                ties += 1
    return {"images": len(images), "reference_detections": total, "matched_detections": int(matched),
            "nms_tie_flips": int(ties), "match_rate": (matched + ties) / total if total else 1.0,
            "min_iou": worst_iou, "max_score_diff": worst_score,
            "raw_max_box_diff": raw_box, "raw_max_score_diff": raw_score}


def check(figures: dict[str, Any], task: str, tolerance: float = FP32_TOLERANCE) -> list[str]:
    """Problems with the figures ('' list when within tolerance)."""
    problems = []
    if task == DETECTION:
        if figures["match_rate"] < MIN_MATCH_RATE:
            problems.append(f"only {figures['matched_detections']}/{figures['reference_detections']} detections matched "
                            f"(IoU >= {BOX_IOU_MIN}; {figures['nms_tie_flips']} more were NMS tie flips)")
        for key in ("max_score_diff", "raw_max_score_diff", "raw_max_box_diff"):
            if figures[key] > tolerance:
                problems.append(f"{key.replace('_', ' ')} {figures[key]:.2e} > {tolerance:.0e}")
    else:
        if figures["top1_agreement"] < 1.0:
            problems.append(f"top-1 agreement {figures['top1_agreement']:.4f} < 1")
        if figures["max_abs_diff"] > tolerance:
            problems.append(f"max probability difference {figures['max_abs_diff']:.2e} > {tolerance:.0e}")
    return problems
