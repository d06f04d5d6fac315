"""Pieces every detection reader and writer shares (private to this subpackage).

Readers do not build :class:`~falconet.data.types.Dataset` objects themselves: they return a
:class:`RawDataset` that says what the annotation files *claim* (boxes in the format's own
units, the image size the file states). :mod:`.validate` then checks every claim against the
real image, so all four formats get exactly the same rules and the same issue codes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from falconet.core.errors import DatasetError
from falconet.data.types import Issue

#: Extensions we list as images. Anything else in a folder is ignored, not reported.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: What a decoder-reported format is allowed to be called. MPO is a multi-picture JPEG (phones).
EXTENSION_FORMATS: dict[str, set[str]] = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".jpe": {"JPEG", "MPO"},
    ".jfif": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".bmp": {"BMP"},
    ".gif": {"GIF"},
    ".webp": {"WEBP"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}

#: The extension a writer gives a file of each real format (so written datasets never lie).
FORMAT_EXTENSION = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif",
                    "WEBP": ".webp", "TIFF": ".tif"}

FORMATS = ("voc", "coco", "yolo", "customvision")
_ALIASES = {
    "voc": "voc", "pascal-voc": "voc", "pascalvoc": "voc", "pascal_voc": "voc",
    "coco": "coco", "coco-json": "coco",
    "yolo": "yolo", "yolov5": "yolo", "yolov8": "yolo", "darknet": "yolo",
    "customvision": "customvision", "custom-vision": "customvision", "custom_vision": "customvision",
    "cv": "customvision",
}


def normalise_format(name: str) -> str:
    """The canonical format name for a user-typed one; DatasetError lists the accepted names."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise DatasetError(
            f"Unknown detection dataset format {name!r}; expected one of {', '.join(FORMATS)}."
        )
    return _ALIASES[key]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` by extension, sorted so every run sees the same order."""
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p))


def find_child(folder: Path, *names: str) -> Path | None:
    """The first child directory whose name matches one of ``names`` case-insensitively.

    Layouts come from Windows and macOS tools as often as from Linux ones, so ``Annotations``
    and ``annotations`` are the same folder to a user.
    """
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


@dataclass
class RawBox:
    """A box as the annotation file states it: xyxy in pixels or normalised (see RawEntry)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class RawEntry:
    """One image and the boxes its annotation claims.

    ``pixels`` says whether the coordinates are pixels (VOC, COCO: divided by the real size
    later) or already normalised (YOLO, Custom Vision). ``stated_size`` is the size the file
    claims, used only to report disagreement and to spot boxes drawn on the un-rotated frame.
    """

    image: Path
    boxes: list[RawBox] = field(default_factory=list)
    pixels: bool = False
    stated_size: tuple[int, int] | None = None
    annotation: Path | None = None


@dataclass
class RawDataset:
    root: Path
    format: str
    entries: list[RawEntry]
    issues: list[Issue] = field(default_factory=list)
    #: The class list the files declare (COCO categories, YOLO names); None when the format
    #: has none (VOC, Custom Vision: whatever tags the boxes carry are the tags).
    declared_labels: list[str] | None = None


def unknown_tag(path: Path | str, label: str, known: list[str] | None = None) -> Issue:
    """The one wording for a box whose tag is not in the declared class list."""
    hint = f" (declared: {', '.join(known)})" if known else ""
    return Issue(
        "unknown-tag",
        str(path),
        f"A box has tag {label!r}, which is not in the dataset's class list{hint}; the box was "
        "dropped. Fix the class list or the annotation.",
        "error",
    )


# --------------------------------------------------------------------------------- writing

@contextlib.contextmanager
def staged_output(out_dir: Path | str) -> Iterator[Path]:
    """Write into a hidden sibling folder and rename it into place only when complete.

    A crash or an error half-way leaves nothing at ``out_dir`` rather than a dataset that
    looks whole but lacks files. An existing non-empty ``out_dir`` is refused: we never merge
    into, or delete, a user's folder.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"The output folder {out} already exists and is not empty.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class NamePicker:
    """Unique, honest file names for a flat output folder.

    Two source images may share a name (``train/a.jpg``, ``val/a.jpg``) and a ``.jpg`` may
    really be a PNG; the written copy keeps the stem, takes the extension of its real format,
    and gets ``_1``, ``_2`` ... when the name is taken (case-insensitively, for Windows/macOS).
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def pick(self, source: Path, real_format: str | None) -> str:
        ext = source.suffix.lower()
        allowed = EXTENSION_FORMATS.get(ext, set())
        if real_format and real_format not in allowed:
            ext = FORMAT_EXTENSION.get(real_format, ext)
        stem = source.stem
        name = f"{stem}{ext}"
        n = 1
        while name.lower() in self._taken:
            name = f"{stem}_{n}{ext}"
            n += 1
        self._taken.add(name.lower())
        return name


def place_image(source: Path, dest: Path, link: bool = False) -> None:
    """Copy (or hard-link, falling back to a copy across filesystems) one image file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass
    shutil.copyfile(source, dest)
