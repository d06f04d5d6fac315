"""Checking one uploaded training image against the hosted service's limits.

Each failure maps to the per-item status the Training API reports in an ImageCreateSummary
(``ErrorImageFormat``, ``ErrorImageSize``, ``ErrorImageDimensions``), so one bad file in a batch
of 64 fails alone and the batch answers 207 with the reason next to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from falconet.core.errors import FalconetError, ImageTooLargeError, ImageTooSmallError
from falconet.core.images import ImageLimits, load_image

#: The hosted service's training upload limit.
MAX_TRAINING_BYTES = 6 * 1024 * 1024
#: The real largest side users measured on the hosted service (its docs say 10,240).
MAX_SIDE = 10_240
MAX_ASPECT = 25.0
#: Smaller images are accepted and upsampled by training, as the hosted service does.
MIN_SIDE = 16
ACCEPTED_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif"}
_LIMITS = ImageLimits(max_side=MAX_SIDE, max_pixels=MAX_SIDE * MAX_SIDE, min_side=MIN_SIDE)


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class Refusal:
    status: str
    message: str


def check_image(data: bytes, max_bytes: int = MAX_TRAINING_BYTES) -> CheckedImage | Refusal:
    """The image with its upright size and stored extension, or why it is refused."""
    if len(data) > max_bytes:
        return Refusal("ErrorImageSize", f"The image is {len(data) / 1048576:.1f} MB; the limit is "
                                         f"{max_bytes / 1048576:.0f} MB.")
    try:
        image = load_image(data, _LIMITS)
    except (ImageTooLargeError, ImageTooSmallError) as exc:
        return Refusal("ErrorImageDimensions", exc.message)
    except FalconetError as exc:
        return Refusal("ErrorImageFormat", exc.message)
    from PIL import Image
    import io

    with Image.open(io.BytesIO(data)) as header:
        fmt: Optional[str] = header.format
    if fmt not in ACCEPTED_FORMATS:
        return Refusal("ErrorImageFormat", f"{fmt} images are not accepted; send JPEG, PNG, BMP or GIF.")
    width, height = image.size
    if max(width, height) / min(width, height) > MAX_ASPECT:
        return Refusal("ErrorImageDimensions", f"The image is {width}x{height}; the aspect ratio may be at most 25:1.")
    return CheckedImage(data, ACCEPTED_FORMATS[fmt], width, height)
