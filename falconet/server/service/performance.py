"""An iteration's Performance page: precision, recall and AP at the sliders, and per-image results.

Figures come from the held-out (or k-fold) results the training wrote into the package, so they
are honest in the same way as ``falconet evaluate``: no image is scored by a model that trained
on it. Standard deviations are across the k folds when k-fold was used, else 0 (one split
measures no spread).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from falconet.core.manifest import DETECTION, load_manifest
from falconet.server.service.links import FileLinks
from falconet.training.metrics.rescore import fold_spread, metrics_from_rows


def _evaluation(package: Path) -> tuple[Any, dict[str, Any]]:
    import json

    manifest = load_manifest(package, verify=False)
    return manifest, json.loads((package / "evaluation.json").read_text(encoding="utf-8"))


def iteration_performance(row: Any, package: Path, threshold: float, overlap: float) -> dict[str, Any]:
    manifest, evaluation = _evaluation(Path(package))
    labels, task, rows = evaluation["labels"], evaluation["task"], evaluation["images"]
    metrics = metrics_from_rows(rows, labels, task, threshold, overlap)
    split = manifest.training.get("split", {})
    spread = fold_spread(rows, split.get("folds") or [], labels, task, threshold, overlap) if split.get("folds") else \
        {"precision_std": 0.0, "recall_std": 0.0, "per_tag": {}}
    ids = dict(zip(manifest.labels, manifest.tag_ids))
    detection = task == DETECTION
    per_tag = []
    for name, figures in metrics["per_tag"].items():
        tag_spread = spread["per_tag"].get(name, {})
        per_tag.append({"id": ids.get(name, ""), "name": name, "precision": figures["precision"],
                        "precisionStdDeviation": tag_spread.get("precision_std", 0.0), "recall": figures["recall"],
                        "recallStdDeviation": tag_spread.get("recall_std", 0.0),
                        "averagePrecision": figures["ap"] if figures["ap"] is not None else 0.0,
                        "imageCount": figures.get("images", 0)})
    average = metrics["map_overlap"] if detection else metrics["map"]
    return {"perTagPerformance": per_tag, "precision": metrics["precision"], "precisionStdDeviation": spread["precision_std"],
            "recall": metrics["recall"], "recallStdDeviation": spread["recall_std"], "averagePrecision": average,
            # Falconet's own, beside the API's fields:
            "threshold": threshold, "overlapThreshold": overlap if detection else None,
            "accuracy": metrics.get("accuracy"), "confusionMatrix": metrics.get("confusion_matrix"),
            "evaluation": {"method": split.get("method"), "images": len(rows), "note": split.get("note")}}


def image_performances(row: Any, package: Path, links: FileLinks, tag_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every evaluated image with what the held-out model predicted for it."""
    from falconet.server.service.views import snapshot_image_json

    manifest, evaluation = _evaluation(Path(package))
    ids = dict(zip(manifest.labels, manifest.tag_ids))
    names = {t["id"]: t["name"] for t in row.tags}
    by_sha = {item["sha256"]: item for item in row.snapshot}
    wanted = set(tag_ids)
    found = []
    for result in evaluation["images"]:
        item = by_sha.get(Path(result["image"]).stem)
        if item is None:
            continue
        image = snapshot_image_json(item, row.created, names, links)
        if wanted and not wanted & {t["tagId"] for t in image["tags"] or []}:
            continue
        if evaluation["task"] == DETECTION:
            predictions = [{"probability": p[1], "tagId": ids.get(p[0], ""), "tagName": p[0], "tagType": "Regular",
                            "boundingBox": {"left": p[2], "top": p[3], "width": p[4] - p[2], "height": p[5] - p[3]}}
                           for p in result["predicted"]]
        else:
            predictions = [{"probability": p, "tagId": ids.get(name, ""), "tagName": name, "tagType": "Regular",
                            "boundingBox": None} for name, p in zip(evaluation["labels"], result["probabilities"])]
        predictions.sort(key=lambda p: -p["probability"])
        found.append({"predictions": predictions, "id": image["id"], "created": image["created"], "width": image["width"],
                      "height": image["height"], "imageUri": image["originalImageUri"],
                      "thumbnailUri": image["thumbnailUri"], "tags": image["tags"], "regions": image["regions"]})
    return found
