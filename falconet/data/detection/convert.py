"""Write a Dataset in any detection format, and convert between formats.

Every writer stages its output in a hidden sibling folder and renames it into place when
complete, refuses a non-empty destination, copies images (or hard-links them with
``link=True``), renames files whose extension lied about their format, and keeps file names
unique. Boxes round-trip exactly except through VOC, which stores whole pixels (within 1 px).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from falconet.data.detection._common import normalise_format
from falconet.data.detection.coco import write_coco
from falconet.data.detection.customvision import write_customvision
from falconet.data.detection.voc import write_voc
from falconet.data.detection.yolo import write_yolo
from falconet.data.types import Dataset

WRITERS: dict[str, Callable[[Dataset, Path | str, bool], Path]] = {
    "voc": write_voc,
    "coco": write_coco,
    "yolo": write_yolo,
    "customvision": write_customvision,
}


def write_detection(dataset: Dataset, out_dir: Path | str, format: str, link: bool = False) -> Path:
    """Write ``dataset`` to ``out_dir`` (which must not exist or be empty) in ``format``."""
    return WRITERS[normalise_format(format)](dataset, out_dir, link)


def convert(
    src: Path | str,
    dst: Path | str,
    to_format: str,
    from_format: str | None = None,
    *,
    link: bool = False,
    min_images_per_tag: int = 0,
) -> Dataset:
    """Read ``src``, write it to ``dst`` as ``to_format``, and return the dataset read back.

    Reading the result back proves the written files are readable and gives samples whose
    paths point into ``dst``. No per-tag minimum applies by default: converting is not
    training. Validation still applies, so corrupt images, duplicates and degenerate boxes
    are left behind; the returned ``issues`` are those of the source read (what was left
    behind, and why) followed by those of the read-back.
    """
    from falconet.data.detection import read_detection  # late: the package imports this module

    dataset = read_detection(src, from_format, min_images_per_tag=min_images_per_tag)
    write_detection(dataset, dst, to_format, link=link)
    written = read_detection(dst, to_format, min_images_per_tag=0)
    written.issues = dataset.issues + written.issues
    return written


__all__ = ["write_detection", "convert", "WRITERS"]
