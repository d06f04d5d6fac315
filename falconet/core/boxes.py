"""Box arithmetic on plain numpy arrays, shared by the data readers, metrics and every runtime.

Everything here is torch-free so a Raspberry Pi that installs only the runtime still gets the
same NMS that training-time evaluation used: a detector must give the same answer everywhere.

Conventions: boxes are ``(N, 4)`` float arrays (any leading shape ``(..., 4)`` works for the
conversions). ``xyxy`` is corners ``x1, y1, x2, y2``; ``ltwh`` is Custom Vision's ``left, top,
width, height``; ``cxcywh`` is centre and size (YOLO). Coordinates may be normalised or pixels;
nothing here assumes either, except :func:`clip_boxes`, which defaults to the unit square.
Areas are continuous (``x2 - x1``), not the old VOC ``+ 1`` pixel-count convention, because our
boxes are normalised and pixel-count areas would make IoU depend on the image size.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "as_boxes",
    "xyxy_to_ltwh",
    "ltwh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_area",
    "clip_boxes",
    "iou_matrix",
    "nms",
    "class_aware_nms",
]


def as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A float array of shape ``(..., 4)``; an empty input becomes ``(0, 4)``.

    Integer inputs become float64 so that later arithmetic (centres, IoU) does not truncate.
    """
    array = np.asarray(boxes)
    if array.size == 0:
        return np.zeros((0, 4), dtype=array.dtype if array.dtype.kind == "f" else np.float64)
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    if array.shape[-1] != 4:
        raise ValueError(f"Boxes must have 4 coordinates in the last axis, got shape {array.shape}.")
    return array


def xyxy_to_ltwh(boxes: np.ndarray) -> np.ndarray:
    """Corners to left, top, width, height (Custom Vision regions, COCO ``bbox``)."""
    b = as_boxes(boxes)
    out = b.copy()
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def ltwh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Left, top, width, height to corners."""
    b = as_boxes(boxes)
    out = b.copy()
    out[..., 2] = b[..., 0] + b[..., 2]
    out[..., 3] = b[..., 1] + b[..., 3]
    return out


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """Corners to centre x, centre y, width, height (YOLO label files, detector regression)."""
    b = as_boxes(boxes)
    out = np.empty_like(b)
    out[..., 0] = (b[..., 0] + b[..., 2]) / 2.0
    out[..., 1] = (b[..., 1] + b[..., 3]) / 2.0
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Centre and size to corners."""
    b = as_boxes(boxes)
    out = np.empty_like(b)
    half_w = b[..., 2] / 2.0
    half_h = b[..., 3] / 2.0
    out[..., 0] = b[..., 0] - half_w
    out[..., 1] = b[..., 1] - half_h
    out[..., 2] = b[..., 0] + half_w
    out[..., 3] = b[..., 1] + half_h
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of xyxy boxes; inverted boxes count as 0 rather than negative."""
    b = as_boxes(boxes)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def clip_boxes(boxes: np.ndarray, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """A copy of xyxy boxes limited to ``[0, width] x [0, height]`` (the unit square by default).

    Clipping (not dropping) keeps a box whose object is cut by the image edge; callers decide
    whether what is left is still big enough to keep.
    """
    b = as_boxes(boxes).copy()
    b[..., 0::2] = np.clip(b[..., 0::2], 0.0, width)
    b[..., 1::2] = np.clip(b[..., 1::2], 0.0, height)
    return b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N) with every box in ``b`` (M): ``(N, M)``.

    A pair whose union is empty (two zero-area boxes) gets 0, not NaN, so callers can threshold
    the result without special cases.
    """
    a = as_boxes(a).reshape(-1, 4)
    b = as_boxes(b).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    A box is suppressed when its IoU with an already kept, higher-scoring box is *greater than*
    ``iou_threshold`` (the torchvision / ONNX convention), so exporting NMS into a graph keeps
    the same answer. Ties in score keep input order (stable sort), which makes results
    reproducible across platforms.
    """
    b = as_boxes(boxes).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores.")
    if len(b) == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-s, kind="stable")
    x1, y1, x2, y2 = (b[:, i] for i in range(4))
    areas = box_area(b)
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def class_aware_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | Sequence[int] | Sequence[str],
    iou_threshold: float = 0.45,
    max_detections: int = 100,
) -> np.ndarray:
    """NMS within each class only; at most ``max_detections`` indices, highest score first.

    Uses the offset trick: every class is shifted to its own region of the plane, far enough
    that boxes of different classes can never overlap, and one NMS pass runs over everything.
    That is one vectorised pass instead of a Python loop over classes, and it is the same
    trick an in-graph NMS uses, so runtime and graph agree. ``classes`` may be integers or
    names.
    """
    b = as_boxes(boxes).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) == 0:
        return np.zeros((0,), dtype=np.int64)
    _, class_index = np.unique(np.asarray(classes), return_inverse=True)
    class_index = class_index.reshape(-1)
    if len(class_index) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(class_index)} classes.")
    span = float(b.max() - b.min()) + 1.0
    # Shift relative to the minimum so negative coordinates cannot reach the previous class.
    shifted = (b - b.min()) + (class_index.astype(np.float64) * span)[:, None]
    keep = nms(shifted, s, iou_threshold)
    if max_detections is not None and max_detections >= 0:
        keep = keep[:max_detections]
    return keep
