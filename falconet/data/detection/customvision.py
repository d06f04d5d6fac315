"""Custom Vision style: one folder per tag plus ``regions.json`` at the top.

``regions.json`` maps an image's file name to its regions (Custom Vision ``Region``
convention: normalised ``left, top, width, height``)::

    {"fork_1.jpg": [[0.14, 0.35, 0.59, 0.24]], "scissors_3.jpg": [[...], [...]]}

A key may also be ``"folder/name.jpg"`` (needed when two folders hold the same file name); the
folder-qualified key wins. A region given as a 4-number list takes its tag from the folder the
image sits in; a region may instead be an object ``{"tagName": "apple", "left": ..., "top": ...,
"width": ..., "height": ...}``, which is how an image with several tags (or an image outside a
tag folder) is written. An empty list marks a background image.

Which folders are tags: a folder none of whose images appears in ``regions.json`` is not
training data. The quickstart's ``test/`` folder (one unlabelled image to predict on) is
therefore ignored (info ``ignored-folder``) rather than becoming a tag with no boxes. In a
folder that does have regions, an image missing from ``regions.json`` is reported
(``unlabelled``) and skipped: treating it as background would teach the model that the
fork in it is not a fork.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from falconet.core.errors import DatasetError
from falconet.core.images import image_format
from falconet.data.detection._common import (
    NamePicker,
    RawBox,
    RawDataset,
    RawEntry,
    list_images,
    place_image,
    staged_output,
)
from falconet.data.types import Dataset, Issue

REGIONS = "regions.json"
_TAG_KEYS = ("tagName", "tag", "tag_name", "label")


def _key(text: str) -> str:
    text = text.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _parse_regions(value: Any, folder_tag: str | None, where: str, issues: list[Issue]) -> list[RawBox] | None:
    if not isinstance(value, list):
        issues.append(Issue("bad-annotation", where, f"Regions must be a list, got {type(value).__name__}; the image is skipped."))
        return None
    boxes: list[RawBox] = []
    for region in value:
        tag: str | None = folder_tag
        try:
            if isinstance(region, dict):
                tag = next((str(region[k]).strip() for k in _TAG_KEYS if region.get(k) not in (None, "")), folder_tag)
                left, top, width, height = (float(region[k]) for k in ("left", "top", "width", "height"))
            elif isinstance(region, (list, tuple)) and len(region) == 4:
                left, top, width, height = (float(v) for v in region)
            else:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            issues.append(Issue("bad-annotation", where, f"The region {str(region)[:80]} is not [left, top, width, height]; dropped."))
            continue
        if not tag:
            issues.append(Issue("bad-annotation", where, "A region outside a tag folder needs a 'tagName'; dropped."))
            continue
        boxes.append(RawBox(tag, left, top, left + width, top + height))
    return boxes


def read_customvision(path: Path | str) -> RawDataset:
    """Match tag folders' images with ``regions.json``; validation happens in :mod:`.validate`."""
    path = Path(path)
    regions_file = path if path.is_file() else path / REGIONS
    root = regions_file.parent
    if not regions_file.is_file():
        raise DatasetError(f"{root} is not a Custom Vision detection folder: it has no {REGIONS}.")
    try:
        data = json.loads(regions_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{regions_file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{regions_file} must map file names to lists of regions.")
    regions = {_key(str(k)): v for k, v in data.items()}
    used: set[str] = set()
    issues: list[Issue] = []
    entries: list[RawEntry] = []

    def lookup(image: Path, folder: str | None) -> str | None:
        for key in ([f"{folder}/{image.name}"] if folder else []) + [image.name]:
            if key in regions:
                return key
        return None

    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups: list[tuple[str | None, list[Path]]] = [(None, list_images(root))]
    groups += [(f.name, list_images(f)) for f in folders]
    for folder, images in groups:
        keyed = [(image, lookup(image, folder)) for image in images]
        if folder is not None and images and all(k is None for _, k in keyed):
            issues.append(Issue(
                "ignored-folder", str(root / folder),
                f"No image in {folder}/ appears in {REGIONS}, so it is not a tag folder; its "
                f"{len(images)} image(s) are not used.", "info",
            ))
            continue
        for image, key in keyed:
            if key is None:
                if folder is not None:
                    issues.append(Issue("unlabelled", str(image), f"The image is not in {REGIONS}; skipped (an empty list marks a background image)."))
                continue
            used.add(key)
            boxes = _parse_regions(regions[key], folder, str(image), issues)
            if boxes is not None:
                entries.append(RawEntry(image, boxes, pixels=False, annotation=regions_file))
    for key in regions:
        if key not in used:
            issues.append(Issue("missing-image", str(regions_file), f"{REGIONS} lists {key!r}, which is not in any tag folder; skipped."))
    entries.sort(key=lambda e: e.image)
    return RawDataset(root, "customvision", entries, issues)


def _folder_name(label: str) -> str:
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", label).strip(" .")
    return name or "_"


def write_customvision(dataset: Dataset, out_dir: Path | str, link: bool = False) -> Path:
    """Write one folder per tag and ``regions.json``.

    An image goes into the folder of its most frequent tag (ties: label order); its boxes of
    that tag are written as bare ``[left, top, width, height]`` lists, boxes of other tags as
    objects with ``tagName``. Background images go to a folder that is no tag's name
    (``untagged`` unless taken) with an empty region list.
    """
    names = NamePicker()
    order = {label: i for i, label in enumerate(dataset.labels)}
    folders = {label: _folder_name(label) for label in dataset.labels}
    background = "untagged"
    while background in folders.values():
        background = f"_{background}"
    regions: dict[str, list[Any]] = {}
    with staged_output(out_dir) as tmp:
        for sample in dataset.samples:
            counts: dict[str, int] = {}
            for box in sample.boxes:
                counts[box.label] = counts.get(box.label, 0) + 1
            main = min(counts, key=lambda t: (-counts[t], order[t])) if counts else None
            folder = folders[main] if main is not None else background
            name = names.pick(Path(sample.path), image_format(Path(sample.path)))
            place_image(Path(sample.path), tmp / folder / name, link)
            written: list[Any] = []
            for box in sample.boxes:
                ltwh = [box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1]
                if box.label == main and folder == box.label:
                    written.append(ltwh)
                else:
                    written.append({"tagName": box.label, "left": ltwh[0], "top": ltwh[1], "width": ltwh[2], "height": ltwh[3]})
            regions[name] = written
        (tmp / REGIONS).write_text(json.dumps(regions, indent=1) + "\n", encoding="utf-8")
    return Path(out_dir)


__all__ = ["read_customvision", "write_customvision", "REGIONS"]
