"""Rows -> the Training API's JSON objects (the SDK's models, key for key)."""
from __future__ import annotations

from typing import Any, Optional

from falconet.server.service.catalog import exportable_platforms, resolve_domain
from falconet.server.service.links import FileLinks


def project_json(row: Any, links: FileLinks, thumbnail: Optional[str] = None) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "description": row.description,
        "settings": {"domainId": row.domain_id, "classificationType": row.classification_type,
                     "targetExportPlatforms": list(row.target_export_platforms or []), "useNegativeSet": True,
                     "detectionParameters": None, "imageProcessingSettings": {"augmentationMethods": {}},
                     "exportModelContainerUri": None, "notificationQueueUri": None},
        "created": row.created, "lastModified": row.last_modified,
        "thumbnailUri": links.thumbnail(thumbnail) if thumbnail else None,
        "drModeEnabled": False, "status": "Succeeded",
    }


def tag_json(row: Any, count: int) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description, "type": row.type, "imageCount": int(count)}


def image_json(row: Any, tags: list[Any], regions: list[Any], links: FileLinks) -> dict[str, Any]:
    return {
        "id": row.id, "created": row.created, "width": row.width, "height": row.height,
        **links.image(row.sha256, row.format),
        "tags": [{"tagId": t.tag_id, "tagName": t.name, "created": t.created} for t in tags] or None,
        "regions": [{"regionId": r.id, "tagName": r.tag_name, "created": r.created, "tagId": r.tag_id, "left": r.left,
                     "top": r.top, "width": r.width, "height": r.height} for r in regions] or None,
        "metadata": dict(row.metadata or {}) or None,
    }


def snapshot_image_json(item: dict[str, Any], created: str, names: dict[str, str], links: FileLinks) -> dict[str, Any]:
    """An image as an iteration trained on it (its tags and boxes then, not now)."""
    regions = [{"regionId": f"{item['image']}-{n}", "tagName": names.get(r[0], ""), "created": created, "tagId": r[0],
                "left": r[1], "top": r[2], "width": r[3], "height": r[4]} for n, r in enumerate(item["regions"])]
    tag_ids = list(dict.fromkeys(item["tags"] + [r[0] for r in item["regions"]]))
    return {"id": item["image"], "created": created, "width": item["width"], "height": item["height"],
            **links.image(item["sha256"], item["format"]),
            "tags": [{"tagId": t, "tagName": names.get(t, ""), "created": created} for t in tag_ids] or None,
            "regions": regions or None, "metadata": None}


def iteration_json(row: Any) -> dict[str, Any]:
    domain = resolve_domain(row.domain_id)
    completed = row.status == "Completed"
    return {
        "id": row.id, "name": row.name, "status": row.status, "created": row.created, "lastModified": row.last_modified,
        "trainedAt": row.trained_at, "projectId": row.project_id, "exportable": completed and domain.compact,
        "exportableTo": exportable_platforms(domain) if completed else [], "domainId": row.domain_id,
        "classificationType": row.classification_type, "trainingType": row.training_type,
        "reservedBudgetInHours": row.reserved_budget_in_hours,
        "trainingTimeInMinutes": int(round((row.training_time_s or 0) / 60)),
        "publishName": row.publish_name, "originalPublishResourceId": row.prediction_id,
        "customBaseModelInfo": None, "trainingErrorDetails": row.error,
        # Falconet's own, beside the SDK's fields: what the worker is doing now.
        "progress": dict(row.progress or {}),
    }


def export_json(row: Any, links: FileLinks) -> dict[str, Any]:
    done = row.status == "Done"
    flavor = row.flavor or None
    name = f"{row.platform}-{flavor}" if flavor else row.platform
    return {"platform": row.platform, "status": row.status, "flavor": flavor, "newerVersionAvailable": False,
            "downloadUri": links.export(row.iteration_id, f"{name}.zip") if done else None,
            "error": row.error}
