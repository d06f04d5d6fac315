"""Image decoding shared by training, evaluation, every runtime and the server.

One decoder means one set of rules: EXIF orientation is applied, every mode becomes 8-bit RGB,
and the pixel count is checked from the header *before* pixels are allocated, so a
decompression bomb is refused without being decoded.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from falconet.core.errors import ImageTooLargeError, ImageTooSmallError, InvalidImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: Largest side and pixel count we agree to decode. 30000x30000 PNG bombs stop here.
MAX_SIDE = 16384
MAX_PIXELS = 100_000_000
#: Smallest side worth training on; Custom Vision asks for 256 but accepts less and upsamples.
MIN_SIDE = 16

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "MPO"}


@dataclass(frozen=True)
class ImageLimits:
    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE


DEFAULT_LIMITS = ImageLimits()


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError("The image is empty (0 bytes).")
        fp: object = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No such image file: {path}", code="ImageNotFound")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"The image file is empty: {path}")
        fp = path
    else:
        raise InvalidImageError(f"Unsupported image input type {type(source).__name__}")
    try:
        # Header only: nothing is decoded yet, so the size check below is cheap and safe.
        return Image.open(fp)  # type: ignore[arg-type]
    except UnidentifiedImageError as exc:
        raise InvalidImageError("The data is not a recognised image format.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except OSError as exc:
        raise InvalidImageError(f"The image could not be read: {exc}") from exc


def check_dimensions(width: int, height: int, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse sizes we will not decode, before any pixel is allocated."""
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"The image has no pixels ({width}x{height}).")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height}; the limit is {limits.max_side} px a side and "
            f"{limits.max_pixels // 1_000_000} megapixels."
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmallError(
            f"The image is {width}x{height}; the smallest side must be at least {limits.min_side} px."
        )


def load_image(source: ImageInput, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode any accepted input into an upright 8-bit RGB PIL image."""
    if isinstance(source, Image.Image):
        image = source
        check_dimensions(image.width, image.height, limits)
        image = ImageOps.exif_transpose(image) if hasattr(image, "getexif") else image
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(source, np.ndarray):
        return _from_array(source, limits)
    image = _open(source)
    check_dimensions(image.width, image.height, limits)
    try:
        image.load()
        # Transpose needs decoded pixels; applying it here keeps every caller upright.
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"The image is corrupt or truncated: {exc}") from exc


def _from_array(array: np.ndarray, limits: ImageLimits) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidImageError(f"Arrays must be uint8 HWC RGB, got dtype {array.dtype}.")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InvalidImageError(f"Arrays must be HxWx3 (RGB), got shape {array.shape}.")
    check_dimensions(array.shape[1], array.shape[0], limits)
    return Image.fromarray(np.ascontiguousarray(array[:, :, :3]), "RGB")


def image_format(source: str | os.PathLike | bytes) -> str | None:
    """The real format from the content (extensions lie), or None when it is not an image."""
    try:
        with _open(source) as image:
            return image.format
    except InvalidImageError:
        return None
