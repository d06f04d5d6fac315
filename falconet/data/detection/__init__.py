"""Object detection datasets in and out: Pascal VOC, COCO JSON, YOLO txt, Custom Vision.

``read_detection`` finds the format (or takes it), reads the annotations, checks every image
and box against the real files (:mod:`.validate` lists the rules and issue codes) and returns a
:class:`~falconet.data.types.Dataset` with ``task="detection"``:

* ``labels``: the tags that have at least one usable box, **sorted**, whatever order the files
  declare them in: the same data in any format gives the same class indices;
* each Sample: ``width``/``height`` from the image itself (EXIF orientation applied; annotation
  files lie, some say 0x0), ``sha256`` of the file bytes, boxes as normalised x1, y1, x2, y2
  :class:`~falconet.data.types.Box` objects on the upright image; ``labels`` stays empty;
* samples sorted by path; a byte-identical duplicate keeps the first copy.
"""
from __future__ import annotations

from pathlib import Path

from falconet.data.detection._common import FORMATS, normalise_format
from falconet.data.detection.coco import read_coco, write_coco
from falconet.data.detection.convert import convert, write_detection
from falconet.data.detection.customvision import read_customvision, write_customvision
from falconet.data.detection.detect import detect_format
from falconet.data.detection.validate import MIN_IMAGES_PER_TAG, check_min_images, finalize, inspect_image
from falconet.data.detection.voc import read_voc, write_voc
from falconet.data.detection.yolo import read_yolo, write_yolo
from falconet.data.types import Dataset

READERS = {
    "voc": read_voc,
    "coco": read_coco,
    "yolo": read_yolo,
    "customvision": read_customvision,
}


def read_detection(
    path: Path | str,
    format: str | None = None,
    min_images_per_tag: int = MIN_IMAGES_PER_TAG,
    *,
    strict: bool = True,
) -> Dataset:
    """Read and validate a detection dataset.

    Raises ``DatasetError`` when the layout is not recognised, nothing usable is found, or an
    error-severity issue exists (``unknown-tag``), and ``NotEnoughImagesError`` when a tag has
    fewer than ``min_images_per_tag`` images (15: Custom Vision's minimum; 0 turns the check
    off). With ``strict=False`` those issues are recorded in ``Dataset.issues`` instead (only
    "nothing usable at all" still raises), so a user can see every problem at once.
    """
    fmt = normalise_format(format) if format else detect_format(path)
    raw = READERS[fmt](Path(path))
    return finalize(raw, min_images_per_tag=min_images_per_tag, strict=strict)


__all__ = [
    "FORMATS",
    "MIN_IMAGES_PER_TAG",
    "read_detection",
    "write_detection",
    "convert",
    "detect_format",
    "check_min_images",
    "inspect_image",
    "read_voc", "write_voc",
    "read_coco", "write_coco",
    "read_yolo", "write_yolo",
    "read_customvision", "write_customvision",
]
