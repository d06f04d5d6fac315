"""Tell which detection format a path holds, from its files alone.

Checked in this order, most specific first, so a folder that happens to hold two kinds of
file still gets the reading its author meant:

1. ``customvision``: ``regions.json`` (or the path is that file);
2. ``yolo``: a ``data.yaml``-style file, or a ``labels`` folder holding ``.txt`` files next to
   an ``images`` folder (at the top or one level down, e.g. ``train/images``), or images with
   ``.txt`` files beside them plus ``classes.txt`` / ``*.names`` (darknet);
3. ``voc``: ``.xml`` files at the top, in ``Annotations/`` or in ``annotations/``;
4. ``coco``: a ``.json`` file (the path itself, or exactly one in the folder or in
   ``annotations/``).
"""
from __future__ import annotations

from pathlib import Path

from falconet.core.errors import DatasetError
from falconet.data.detection._common import find_child, list_images
from falconet.data.detection.coco import find_coco_json
from falconet.data.detection.customvision import REGIONS
from falconet.data.detection.voc import voc_layout
from falconet.data.detection.yolo import _YAML_NAMES

LOOKED_FOR = (
    f"Custom Vision: {REGIONS} with one folder per tag; "
    "YOLO: data.yaml, or images/ + labels/*.txt, or classes.txt/*.names with a .txt beside each image; "
    "Pascal VOC: *.xml beside the images, or Annotations/ + JPEGImages/, or annotations/ + images/; "
    "COCO: one *.json (in the folder or in annotations/)"
)


def _has_yolo_labels(folder: Path) -> bool:
    images, labels = find_child(folder, "images"), find_child(folder, "labels")
    return images is not None and labels is not None and any(labels.rglob("*.txt"))


def _detect_here(path: Path) -> str | None:
    if path.is_file():
        suffix = path.suffix.lower()
        if path.name.lower() == REGIONS:
            return "customvision"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        if suffix == ".json":
            return "coco"
        return None
    if not path.is_dir():
        return None
    if (path / REGIONS).is_file():
        return "customvision"
    if any((path / name).is_file() for name in _YAML_NAMES) or _has_yolo_labels(path):
        return "yolo"
    if ((path / "classes.txt").is_file() or any(path.glob("*.names"))) and any(
        image.with_suffix(".txt").is_file() for image in list_images(path)
    ):
        return "yolo"  # darknet / LabelImg: a.jpg + a.txt side by side, with a class list
    children = [c for c in sorted(path.iterdir()) if c.is_dir()]
    if any(_has_yolo_labels(c) for c in children) and not voc_layout(path):
        return "yolo"
    if voc_layout(path) is not None:
        return "voc"
    if find_coco_json(path) is not None:
        return "coco"
    return None


def detect_format(path: Path | str) -> str:
    """``"voc"``, ``"coco"``, ``"yolo"`` or ``"customvision"`` for the dataset at ``path``.

    Raises DatasetError listing what was looked for, and naming subfolders that do hold a
    dataset (``fruit-detection/`` holds ``train/`` and ``test/``): the usual mistake is
    pointing one level too high.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"No such file or folder: {path}", code="DatasetNotFound")
    found = _detect_here(path)
    if found is not None:
        return found
    hint = ""
    if path.is_dir():
        inside = []
        for child in sorted(c for c in path.iterdir() if c.is_dir()):
            try:
                kind = _detect_here(child)
            except DatasetError:
                kind = None
            if kind:
                inside.append(f"{child.name}/ ({kind})")
        if inside:
            hint = f" Subfolders that hold one: {', '.join(inside[:10])}."
    raise DatasetError(f"No detection dataset recognised at {path}. Looked for {LOOKED_FOR}.{hint}")


__all__ = ["detect_format", "LOOKED_FOR"]
