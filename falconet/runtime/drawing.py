"""Boxes, labels and the FPS counter drawn on OpenCV (BGR) frames for ``falconet stream``.

Colours come from the tag name, not its index, so a tag keeps its colour whether the predictions
came from a local model or from a remote ``falconet serve`` (whose JSON carries no index).
"""
from __future__ import annotations

import zlib
from typing import Any, Optional, Sequence

import numpy as np

from falconet.core.prediction import Prediction

#: Distinct BGR colours that read well on photos.
PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
           (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


def tag_colour(tag_name: str) -> tuple[int, int, int]:
    return PALETTE[zlib.crc32(tag_name.encode("utf-8")) % len(PALETTE)]


def _label(cv2: Any, image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    """Text on a filled background, kept inside the image."""
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    height, width = image.shape[:2]
    x = max(0, min(x, width - w - 2))
    y = max(h + base + 2, min(y, height))
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 2, y), colour, -1)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def annotate(image: np.ndarray, predictions: Sequence[Prediction], fps: Optional[float] = None,
             max_tags: int = 3) -> np.ndarray:
    """Draw on ``image`` in place and return it: a box and label per detection, or the top tags in
    the corner for a classifier, and the frames-per-second counter at the bottom."""
    from falconet.runtime.sources import import_cv2

    cv2 = import_cv2()
    height, width = image.shape[:2]
    scale = max(0.35, min(1.2, min(width, height) / 640))
    thickness = max(1, int(round(min(width, height) / 320)))
    row = 0
    for p in predictions:
        colour = tag_colour(p.tag_name)
        text = f"{p.tag_name} {p.probability:.2f}"
        if p.bounding_box is not None:
            x1, y1, x2, y2 = p.bounding_box.to_xyxy()
            pt1 = (int(round(x1 * (width - 1))), int(round(y1 * (height - 1))))
            pt2 = (int(round(x2 * (width - 1))), int(round(y2 * (height - 1))))
            cv2.rectangle(image, pt1, pt2, colour, thickness)
            _label(cv2, image, text, pt1[0], pt1[1], colour, scale)
        elif row < max_tags:
            row += 1
            _label(cv2, image, text, 4, 4 + row * int(30 * scale + 6), colour, scale)
    if fps is not None:
        _label(cv2, image, f"{fps:.1f} FPS", 4, height - 4, (40, 40, 40), scale)
    return image
