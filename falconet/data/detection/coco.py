"""COCO JSON (``images``, ``annotations``, ``categories``; ``bbox`` is ``[x, y, w, h]`` pixels).

``path`` may be the JSON file itself or a folder holding exactly one ``.json`` (or exactly one
in its ``annotations/`` subfolder). An image's ``file_name`` is looked up, in order, relative to
the JSON's folder, its ``images/`` subfolder, and the ``images/`` folder beside an
``annotations/`` folder; then by bare file name in those places (exports often keep a path
from the machine that made them).

The per-image ``width``/``height`` are not trusted for scaling (the real image size is used;
disagreement is reported). ``iscrowd`` annotations mark a group of objects, not one object,
so they are skipped (info ``crowd``). A ``category_id`` missing from ``categories`` is an
``unknown-tag`` error. Images in the folder that the JSON does not list are not read: a COCO
file lists its images explicitly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falconet.core.errors import DatasetError
from falconet.core.images import image_format
from falconet.data.detection._common import (
    NamePicker,
    RawBox,
    RawDataset,
    RawEntry,
    find_child,
    place_image,
    staged_output,
    unknown_tag,
)
from falconet.data.types import Dataset, Issue


def _jsons(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".json"
                  and p.name.lower() != "regions.json" and not p.name.startswith("."))


def find_coco_json(path: Path) -> Path | None:
    """The annotation file of a COCO dataset at ``path``; None when there is none.

    Raises DatasetError when a folder holds several candidates: guessing would silently train
    on the wrong split.
    """
    if path.is_file():
        return path if path.suffix.lower() == ".json" else None
    if not path.is_dir():
        return None
    for folder in (path, find_child(path, "annotations")):
        if folder is None:
            continue
        found = _jsons(folder)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatasetError(
                f"{folder} holds {len(found)} JSON files ({', '.join(p.name for p in found[:5])}); "
                "pass the COCO annotation file itself."
            )
    return None


def _resolve(json_dir: Path, file_name: str) -> Path | None:
    rel = Path(file_name.replace("\\", "/"))
    bases = [json_dir, json_dir / "images"]
    if json_dir.name.lower() == "annotations":
        bases += [json_dir.parent, json_dir.parent / "images"]
    for candidate in [b / rel for b in bases] + [b / rel.name for b in bases]:
        if candidate.is_file():
            return candidate
    return None


def read_coco(path: Path | str) -> RawDataset:
    """Read the JSON and find every image it lists; validation happens in :mod:`.validate`."""
    path = Path(path)
    json_path = find_coco_json(path)
    if json_path is None:
        raise DatasetError(f"{path} is not a COCO dataset: no .json file in it or in annotations/.")
    try:
        data: Any = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{json_path} is not a COCO detection file: it needs 'images', 'annotations' and 'categories' lists.")
    root = path if path.is_dir() else json_path.parent
    issues: list[Issue] = []
    categories: dict[Any, str] = {}
    for cat in data["categories"]:
        if isinstance(cat, dict) and "id" in cat and cat.get("name") not in (None, ""):
            categories[cat["id"]] = str(cat["name"]).strip()
    declared = list(dict.fromkeys(categories.values()))
    entries: dict[Any, RawEntry] = {}
    for record in data["images"]:
        if not isinstance(record, dict) or "id" not in record or not record.get("file_name"):
            issues.append(Issue("bad-annotation", str(json_path), f"An image record lacks 'id' or 'file_name': {str(record)[:80]}"))
            continue
        image = _resolve(json_path.parent, str(record["file_name"]))
        if image is None:
            issues.append(Issue("missing-image", str(json_path), f"The image {record['file_name']!r} is not in {json_path.parent} or its images/ folder; skipped."))
            continue
        try:
            stated = (int(record.get("width") or 0), int(record.get("height") or 0))
        except (TypeError, ValueError):
            stated = None
        entries[record["id"]] = RawEntry(image, [], pixels=True, stated_size=stated, annotation=json_path)
    listed_ids = {r.get("id") for r in data["images"] if isinstance(r, dict)}
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            continue
        entry = entries.get(ann.get("image_id"))
        if entry is None:
            if ann.get("image_id") not in listed_ids:
                issues.append(Issue("bad-annotation", str(json_path), f"Annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, which is not listed; dropped."))
            continue
        label = categories.get(ann.get("category_id"))
        if label is None:
            issues.append(unknown_tag(entry.image, f"category_id {ann.get('category_id')!r}", declared))
            continue
        if ann.get("iscrowd"):
            issues.append(Issue("crowd", str(entry.image), f"A crowd annotation of {label!r} (a group, not one object) was skipped.", "info"))
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            issues.append(Issue("bad-annotation", str(entry.image), f"Annotation {ann.get('id')} has no valid bbox ({bbox!r}); dropped."))
            continue
        entry.boxes.append(RawBox(label, x, y, x + w, y + h))
    ordered = sorted(entries.values(), key=lambda e: e.image)
    return RawDataset(root, "coco", ordered, issues, declared_labels=declared)


def write_coco(dataset: Dataset, out_dir: Path | str, link: bool = False) -> Path:
    """Write ``annotations.json`` and ``images/``; category ids are 1..N in label order.

    Boxes are written as float pixels (not rounded), so reading back is exact to float
    precision. ``width``/``height`` are the real upright sizes.
    """
    names = NamePicker()
    label_ids = {label: i + 1 for i, label in enumerate(dataset.labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    with staged_output(out_dir) as tmp:
        (tmp / "images").mkdir()
        for image_id, sample in enumerate(dataset.samples, start=1):
            name = names.pick(Path(sample.path), image_format(Path(sample.path)))
            place_image(Path(sample.path), tmp / "images" / name, link)
            w, h = sample.width, sample.height
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
            for box in sample.boxes:
                bw, bh = (box.x2 - box.x1) * w, (box.y2 - box.y1) * h
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": label_ids[box.label],
                    "bbox": [box.x1 * w, box.y1 * h, bw, bh],
                    "area": bw * bh, "iscrowd": 0, "segmentation": [],
                })
        body = {
            "info": {"description": f"Written by Falconet from {dataset.source}"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "none"} for n, i in label_ids.items()],
        }
        (tmp / "annotations.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return Path(out_dir)


__all__ = ["read_coco", "write_coco", "find_coco_json"]
