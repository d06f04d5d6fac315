"""Pascal VOC XML: one ``.xml`` per image, matched to the image by file stem.

Layouts read (folder names are case-insensitive):

* ``JPEGImages/`` + ``Annotations/`` (the VOC devkit; ``ImageSets/`` is ignored),
* ``images/`` + ``annotations/`` (raccoon and many exports; other folders such as ``data/``
  with CSV copies are ignored),
* images and XML side by side in one folder (LabelImg's default, fruit-detection).

Coordinates: ``xmin ymin xmax ymax`` are read as pixel *edges* and divided by the real image
width/height, so a box ``0 0 W H`` is the whole image. The 1-based inclusive convention of the
original devkit would subtract 1 from ``xmin``/``ymin``; modern tools (LabelImg, CVAT,
Roboflow) write 0-based values, and the difference is at most one pixel either way. Float
coordinates are accepted. The ``<size>`` element is never trusted for scaling: some files say
0x0 (fruit-detection has 37); disagreement with the real image is reported.

An image without an XML file is kept as a background image (LabelImg writes no file when an
image has no boxes). XML without an image is reported as ``missing-image``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from falconet.core.errors import DatasetError
from falconet.core.images import image_format
from falconet.data.detection._common import (
    NamePicker,
    RawBox,
    RawDataset,
    RawEntry,
    find_child,
    list_images,
    place_image,
    staged_output,
)
from falconet.data.types import Dataset, Issue


def voc_layout(root: Path) -> tuple[Path, Path] | None:
    """(annotation folder, image folder) of a VOC dataset at ``root``, or None."""
    ann = find_child(root, "Annotations")  # case-insensitive: also annotations/
    if ann is not None and any(p.suffix.lower() == ".xml" for p in ann.iterdir()):
        img = find_child(root, "JPEGImages", "images")
        return ann, img if img is not None else root
    if root.is_dir() and any(p.suffix.lower() == ".xml" and p.is_file() for p in root.iterdir()):
        return root, root
    return None


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _size(root: ET.Element) -> tuple[int, int] | None:
    size = root.find("size")
    try:
        w, h = _text(size, "width"), _text(size, "height")
        return (int(float(w)), int(float(h))) if w is not None and h is not None else None
    except ValueError:
        return None


def parse_voc_xml(path: Path) -> tuple[ET.Element | None, list[RawBox], list[Issue]]:
    """The XML root, its boxes in pixels, and problems with individual objects."""
    issues: list[Issue] = []
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        return None, [], [Issue("bad-annotation", str(path), f"The XML cannot be parsed ({exc}); the image is skipped.")]
    boxes: list[RawBox] = []
    for obj in root.findall("object"):
        name = _text(obj, "name")
        bnd = obj.find("bndbox")  # direct child only: <part> elements carry their own boxes
        if not name or bnd is None:
            issues.append(Issue("bad-annotation", str(path), "An <object> lacks <name> or <bndbox>; it was dropped."))
            continue
        try:
            values = [float(_text(bnd, k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            issues.append(Issue("bad-annotation", str(path), f"The {name!r} box has non-numeric coordinates; dropped."))
            continue
        boxes.append(RawBox(name, *values))
    return root, boxes, issues


def read_voc(path: Path | str) -> RawDataset:
    """Find every image and XML of a VOC dataset; validation happens in :mod:`.validate`."""
    root = Path(path)
    layout = voc_layout(root)
    if layout is None:
        raise DatasetError(f"{root} is not a Pascal VOC dataset: no .xml files in it, in Annotations/ or in annotations/.")
    ann_dir, img_dir = layout
    images = list_images(img_dir)
    by_stem: dict[str, Path] = {}
    for image in images:
        by_stem.setdefault(image.stem, image)
    by_name = {image.name: image for image in images}
    issues: list[Issue] = []
    entries: dict[Path, RawEntry] = {}
    claimed: set[Path] = set()
    for xml in sorted(p for p in ann_dir.iterdir() if p.is_file() and p.suffix.lower() == ".xml"):
        xml_root, boxes, found = parse_voc_xml(xml)
        issues.extend(found)
        image = by_stem.get(xml.stem)
        if image is None and xml_root is not None:
            image = by_name.get(Path(_text(xml_root, "filename") or "").name)
        if image is None:
            issues.append(Issue("missing-image", str(xml), f"No image named {xml.stem}.* for this annotation; skipped."))
            continue
        if image in claimed:
            issues.append(Issue("duplicate", str(xml), f"{image.name} already has an annotation file; this one is ignored."))
            continue
        claimed.add(image)
        if xml_root is not None:  # an unparsable XML skips its image (reported above)
            entries[image] = RawEntry(image, boxes, pixels=True, stated_size=_size(xml_root), annotation=xml)
    for image in images:
        if image not in claimed:
            # No XML: LabelImg and most tools write none for an image without boxes.
            entries[image] = RawEntry(image, [], pixels=True)
    ordered = [entries[p] for p in sorted(entries)]
    return RawDataset(root, "voc", ordered, issues)


def _sub(parent: ET.Element, tag: str, text: str | int) -> ET.Element:
    node = ET.SubElement(parent, tag)
    node.text = str(text)
    return node


def write_voc(dataset: Dataset, out_dir: Path | str, link: bool = False) -> Path:
    """Write ``images/`` + ``annotations/`` with one XML per image (background images too).

    Corners are rounded to whole pixels (the format stores integers), with at least one
    pixel between them, so a read back is within one pixel of the original.
    """
    names = NamePicker()
    with staged_output(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "annotations").mkdir()
        for sample in dataset.samples:
            name = names.pick(Path(sample.path), image_format(Path(sample.path)))
            place_image(Path(sample.path), tmp / "images" / name, link)
            w, h = sample.width, sample.height
            root = ET.Element("annotation")
            _sub(root, "folder", "images")
            _sub(root, "filename", name)
            size = ET.SubElement(root, "size")
            _sub(size, "width", w)
            _sub(size, "height", h)
            _sub(size, "depth", 3)
            _sub(root, "segmented", 0)
            for box in sample.boxes:
                x1, y1 = round(box.x1 * w), round(box.y1 * h)
                x2, y2 = max(round(box.x2 * w), x1 + 1), max(round(box.y2 * h), y1 + 1)
                obj = ET.SubElement(root, "object")
                _sub(obj, "name", box.label)
                _sub(obj, "pose", "Unspecified")
                _sub(obj, "truncated", 0)
                _sub(obj, "difficult", 0)
                bnd = ET.SubElement(obj, "bndbox")
                for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", min(x2, w)), ("ymax", min(y2, h))):
                    _sub(bnd, tag, value)
            ET.indent(root)
            ET.ElementTree(root).write(tmp / "annotations" / f"{Path(name).stem}.xml", encoding="utf-8", xml_declaration=True)
    return Path(out_dir)


__all__ = ["read_voc", "write_voc", "voc_layout", "parse_voc_xml"]
