"""Check every image and box a detection reader found, and turn them into a Dataset.

One set of rules for all formats, so a user sees the same issue codes whatever tool made the
annotations. The rules, and why:

==================== ========= ==================================================================
kind                 severity  what happens
==================== ========= ==================================================================
corrupt              warning   not decodable (truncated, not an image): image skipped
unsupported-format   warning   decodable but not a format we accept: image skipped
too-small, too-large warning   outside ``falconet.core.images`` limits: image skipped
extension-mismatch   warning   the extension lies (``.jpg`` holding PNG): image *kept*
size-mismatch        warning   the annotation states another size (not 0x0): real size used
exif-rotated         info      pixel boxes were drawn on the stored (un-rotated) frame: rotated
box-clipped          warning   box beyond the image by more than half a pixel: clipped
box-degenerate       warning   zero/negative area, or under 1 px after clipping: box dropped
bad-annotation       warning   a box or file that cannot be parsed: dropped
missing-image        warning   an annotation names an image that is not there: annotation dropped
unknown-tag          error     a tag outside the declared class list: box dropped, read refused
no-boxes             info      an image without boxes: kept as a background image
duplicate            warning   byte-identical to an earlier image (sha256): later copy dropped
unused-tag           info      a declared class with no boxes: not made a label
not-enough-images    error     a tag under the per-tag minimum (only recorded when not strict)
==================== ========= ==================================================================

Errors refuse the read by default (``strict=True``): training on silently dropped boxes would
give a model that looks fine and is not. ``strict=False`` returns the dataset with the error
issues recorded, which is what a "validate" command wants to show.

Sizes come from the image header, with EXIF orientation applied (a portrait phone photo is
stored landscape plus an orientation tag; the upright size is what boxes are measured on).
Boxes are taken as drawn on the upright image, except pixel boxes (VOC, COCO) whose file states
the *stored* size of an image whose orientation swaps the axes (5-8): those were drawn by a
tool that ignored EXIF and are turned upright (``exif-rotated``). For mirror/180-degree
orientations (2-4) the size cannot tell the frames apart, so boxes are taken as upright.
"""
from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from falconet.core.errors import (
    DatasetError,
    FalconetError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotEnoughImagesError,
)
from falconet.core.images import SUPPORTED_FORMATS, check_dimensions, image_format, load_image
from falconet.data.detection._common import EXTENSION_FORMATS, RawDataset, RawEntry
from falconet.data.types import Box, Dataset, Issue, Sample

#: Custom Vision's minimum for an object detection tag.
MIN_IMAGES_PER_TAG = 15

#: Orientation tag values whose upright image has width and height swapped.
_SWAPPING = {5, 6, 7, 8}

#: Boxes beyond the edge by less than this many pixels are clipped without a report: that
#: much comes from rounding and from tools that store 1-based inclusive corners.
CLIP_TOLERANCE_PX = 0.5

#: A box under this many pixels on either side after clipping cannot be learnt from.
MIN_BOX_PX = 1.0


@dataclass(frozen=True)
class ImageInfo:
    """What the file really is: upright size, stored size, orientation, format and hash."""

    width: int
    height: int
    stored_width: int
    stored_height: int
    orientation: int
    format: str
    sha256: str


def inspect_image(path: Path) -> tuple[ImageInfo | None, list[Issue]]:
    """Read one image file once; return its facts, or None plus the reason it is unusable.

    The header gives the size cheaply; a full decode (``load_image``, the same decoder
    training uses) then proves the pixels are all there, because a truncated JPEG has a
    perfectly good header.
    """
    issues: list[Issue] = []
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [Issue("corrupt", where, f"The file cannot be read ({exc}); skipped.")]
    digest = hashlib.sha256(data).hexdigest()
    try:
        real = image_format(data)
    except ImageTooLargeError as exc:  # a decompression bomb is refused at the header
        return None, [Issue("too-large", where, f"{exc.message} Skipped.")]
    if real is None:
        return None, [Issue("corrupt", where, "Not a decodable image (corrupt, empty or another kind of file); skipped.")]
    if real not in SUPPORTED_FORMATS:
        return None, [Issue("unsupported-format", where, f"{real} images are not accepted; skipped.")]
    try:
        with Image.open(io.BytesIO(data)) as header:
            stored_w, stored_h = header.size
            # Limits first: reading EXIF may walk the whole file, which a bomb must not get.
            check_dimensions(stored_w, stored_h)
            try:
                orientation = int(header.getexif().get(0x0112, 1) or 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block; the full decode judges the file
                orientation = 1
        if orientation not in range(1, 9):
            orientation = 1
        width, height = (stored_h, stored_w) if orientation in _SWAPPING else (stored_w, stored_h)
        with warnings.catch_warnings():
            # Palette PNGs with transparency warn on RGB conversion; harmless here.
            warnings.simplefilter("ignore")
            load_image(data)
    except ImageTooSmallError as exc:
        return None, [Issue("too-small", where, f"{exc.message} Skipped.")]
    except ImageTooLargeError as exc:
        return None, [Issue("too-large", where, f"{exc.message} Skipped.")]
    except FalconetError as exc:
        return None, [Issue("corrupt", where, f"{exc.message} Skipped.")]
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken headers
        return None, [Issue("corrupt", where, f"The image cannot be read ({exc}); skipped.")]
    ext = path.suffix.lower()
    if ext in EXTENSION_FORMATS and real not in EXTENSION_FORMATS[ext]:
        issues.append(Issue(
            "extension-mismatch", where,
            f"The file is named {ext} but holds a {real} image; it is used as {real}.",
        ))
    return ImageInfo(width, height, stored_w, stored_h, orientation, real, digest), issues


def stored_to_upright(boxes: np.ndarray, orientation: int) -> np.ndarray:
    """Map normalised xyxy boxes on the stored pixel grid to the upright (EXIF-applied) image.

    Each orientation is the transpose PIL's ``exif_transpose`` applies; corners are mapped
    and re-sorted, since mirroring swaps which corner is the top-left.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    u1, v1, u2, v2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    maps = {
        1: lambda u, v: (u, v),
        2: lambda u, v: (1 - u, v),
        3: lambda u, v: (1 - u, 1 - v),
        4: lambda u, v: (u, 1 - v),
        5: lambda u, v: (v, u),
        6: lambda u, v: (1 - v, u),
        7: lambda u, v: (1 - v, 1 - u),
        8: lambda u, v: (v, 1 - u),
    }
    f = maps.get(orientation, maps[1])
    ax, ay = f(u1, v1)
    bx, by = f(u2, v2)
    return np.stack([np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)], axis=1)


def _normalised_boxes(entry: RawEntry, info: ImageInfo, issues: list[Issue]) -> np.ndarray:
    """The entry's boxes as normalised xyxy on the upright image (rows may be NaN)."""
    coords = np.array([[b.x1, b.y1, b.x2, b.y2] for b in entry.boxes], dtype=np.float64).reshape(-1, 4)
    if not entry.pixels:
        return coords
    where = str(entry.annotation or entry.image)
    stated = entry.stated_size
    frame = (info.width, info.height)
    orientation = 1
    if stated and stated != (0, 0) and stated != frame:
        stored = (info.stored_width, info.stored_height)
        if info.orientation != 1 and stated == stored:
            # The annotation tool ignored EXIF: boxes are on the stored grid. Measure them
            # there and turn them upright, instead of stretching them onto the wrong axes.
            frame, orientation = stored, info.orientation
            issues.append(Issue(
                "exif-rotated", where,
                f"The annotation gives the stored size {stated[0]}x{stated[1]} of an image whose "
                f"EXIF orientation is {info.orientation}; its boxes were turned upright.",
                "info",
            ))
        else:
            issues.append(Issue(
                "size-mismatch", where,
                f"The annotation says the image is {stated[0]}x{stated[1]} but it is "
                f"{info.width}x{info.height}; boxes were measured against the real size.",
            ))
    coords = coords / np.array([frame[0], frame[1], frame[0], frame[1]], dtype=np.float64)
    if orientation != 1:
        coords = stored_to_upright(coords, orientation)
    return coords


def _clean_boxes(entry: RawEntry, info: ImageInfo, issues: list[Issue]) -> list[Box]:
    """Clip boxes to the image and drop the unusable ones, reporting each change."""
    where = str(entry.annotation or entry.image)
    coords = _normalised_boxes(entry, info, issues)
    w, h = float(info.width), float(info.height)
    kept: list[Box] = []
    for raw, (x1, y1, x2, y2) in zip(entry.boxes, coords):
        desc = f"{raw.label!r} box ({raw.x1:g}, {raw.y1:g}, {raw.x2:g}, {raw.y2:g})"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            issues.append(Issue("bad-annotation", where, f"The {desc} has non-numeric coordinates; dropped."))
            continue
        if x2 <= x1 or y2 <= y1:
            issues.append(Issue("box-degenerate", where, f"The {desc} has zero or negative area; dropped."))
            continue
        outside_px = max(-x1 * w, -y1 * h, (x2 - 1.0) * w, (y2 - 1.0) * h)
        cx1, cy1 = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)
        cx2, cy2 = min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0)
        if (cx2 - cx1) * w < MIN_BOX_PX or (cy2 - cy1) * h < MIN_BOX_PX:
            issues.append(Issue(
                "box-degenerate", where,
                f"The {desc} is under {MIN_BOX_PX:g} px wide or high inside the "
                f"{info.width}x{info.height} image; dropped.",
            ))
            continue
        if outside_px > CLIP_TOLERANCE_PX:
            issues.append(Issue(
                "box-clipped", where,
                f"The {desc} reaches {outside_px:.1f} px outside the {info.width}x{info.height} "
                "image; clipped to the image.",
            ))
        kept.append(Box(raw.label, float(cx1), float(cy1), float(cx2), float(cy2)))
    return kept


def finalize(
    raw: RawDataset,
    min_images_per_tag: int = MIN_IMAGES_PER_TAG,
    strict: bool = True,
) -> Dataset:
    """Validate a reader's findings against the real images and build the Dataset.

    Labels are the tags that have at least one box, sorted: the same dataset in any format
    then gives the same label order (so the same class indices), and declared but unused
    classes (Roboflow's COCO exports declare one) do not become tags with zero images.
    """
    issues: list[Issue] = list(raw.issues)
    samples: list[Sample] = []
    seen_paths: dict[Path, int] = {}
    by_hash: dict[str, Path] = {}
    for entry in raw.entries:
        if entry.image in seen_paths:
            issues.append(Issue(
                "duplicate", str(entry.annotation or entry.image),
                f"{entry.image} is annotated twice; only the first annotation is used.",
            ))
            continue
        seen_paths[entry.image] = 1
        info, found = inspect_image(entry.image)
        issues.extend(found)
        if info is None:
            continue
        if info.sha256 in by_hash:
            issues.append(Issue(
                "duplicate", str(entry.image),
                f"Byte-identical to {by_hash[info.sha256]}; this copy and its boxes are not used.",
            ))
            continue
        by_hash[info.sha256] = entry.image
        boxes = _clean_boxes(entry, info, issues)
        if not boxes:
            issues.append(Issue(
                "no-boxes", str(entry.image),
                "The image has no boxes; it is kept as a background (negative) example.",
                "info",
            ))
        samples.append(Sample(
            path=entry.image, boxes=boxes, width=info.width, height=info.height, sha256=info.sha256,
        ))
    labels = sorted({b.label for s in samples for b in s.boxes})
    if raw.declared_labels:
        for name in raw.declared_labels:
            if name not in labels:
                issues.append(Issue(
                    "unused-tag", str(raw.root),
                    f"The class {name!r} is declared but no usable box has it; it is not a tag.",
                    "info",
                ))
    dataset = Dataset(
        task="detection", labels=labels, samples=samples, source=str(raw.root),
        format=raw.format, issues=issues,
    )
    if not samples:
        raise DatasetError(f"No usable images were found in {raw.root} ({raw.format} layout).")
    errors = [i for i in issues if i.severity == "error"]
    if strict and errors:
        raise _with_issues(DatasetError(_summary(errors, raw.root)), errors)
    check_min_images(dataset, min_images_per_tag, strict=strict)
    return dataset


def check_min_images(dataset: Dataset, min_images_per_tag: int = MIN_IMAGES_PER_TAG, strict: bool = True) -> None:
    """Refuse (or, not strict, record) tags with fewer images than training needs.

    Detection counts images *containing* the tag, not boxes: ten apples in one photo teach
    less than one apple in each of ten photos. Detection has no Negative tag.
    """
    if not dataset.labels:
        raise DatasetError(f"The dataset at {dataset.source} has no boxes at all; a detector needs tagged boxes.")
    if min_images_per_tag <= 0:
        return
    counts = dataset.counts()
    short = {tag: n for tag, n in counts.items() if n < min_images_per_tag}
    if not short:
        return
    listing = ", ".join(f"{tag!r} has {n}" for tag, n in sorted(short.items(), key=lambda kv: (kv[1], kv[0])))
    message = (
        f"Every tag needs at least {min_images_per_tag} images with boxes for detection; "
        f"too few images: {listing}. Add images or remove the tag."
    )
    if strict:
        error = NotEnoughImagesError(message)
        error.counts = short  # type: ignore[attr-defined]
        raise error
    for tag, n in short.items():
        dataset.issues.append(Issue(
            "not-enough-images", dataset.source,
            f"Tag {tag!r} has {n} images; detection needs at least {min_images_per_tag}.", "error",
        ))


def _summary(errors: Iterable[Issue], root: Path) -> str:
    errors = list(errors)
    shown = "; ".join(f"{e.path}: {e.message}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"The dataset at {root} has {len(errors)} error(s): {shown}{more}"


def _with_issues(error: DatasetError, issues: list[Issue]) -> DatasetError:
    error.issues = issues  # type: ignore[attr-defined]
    return error
