"""The one preprocessing function.

Training-time evaluation, the Python runtime on every backend and the server call
:func:`preprocess`; a mobile app follows the same steps from the manifest's ``input`` block.
Normalisation (mean/std) is *not* here: it is baked into the exported graph, so apps feed plain
RGB values 0-255 after resizing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
from PIL import Image

from falconet.core.images import ImageInput, load_image

#: Crop the largest centred square, then resize: what classifiers expect.
CENTER_CROP = "center-crop"
#: Resize the whole image to the input size, ignoring aspect: boxes stay in normalised coordinates.
STRETCH = "stretch"
RESIZE_MODES = (CENTER_CROP, STRETCH)


@dataclass(frozen=True)
class InputContract:
    """How an image becomes the model's input tensor (recorded in the manifest)."""

    width: int
    height: int
    resize: str = CENTER_CROP
    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 255.0)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {self.layout!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["value_range"] = list(self.value_range)
        data["description"] = describe(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputContract":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "value_range" in fields:
            fields["value_range"] = tuple(fields["value_range"])
        return cls(**fields)

    def with_layout(self, layout: str) -> "InputContract":
        return InputContract(**{**asdict(self), "layout": layout, "value_range": self.value_range})


def describe(contract: InputContract) -> str:
    """Plain words for app developers who reimplement the steps."""
    step = (
        "crop the largest centred square (left = (width - side) // 2, top = (height - side) // 2), then resize it"
        if contract.resize == CENTER_CROP
        else "resize the whole image (aspect ratio not kept)"
    )
    return (
        f"Decode, apply EXIF orientation, convert to RGB; {step} to {contract.width}x{contract.height} "
        f"with {contract.interpolation} (antialiased) interpolation; feed {contract.dtype} values "
        f"{contract.value_range[0]:g}-{contract.value_range[1]:g} in {contract.layout} layout. "
        "Mean/std normalisation is inside the model."
    )


def crop_box(width: int, height: int, contract: InputContract) -> tuple[float, float, float, float]:
    """The region of the source image that the model sees, in source pixels."""
    if contract.resize == STRETCH:
        return (0.0, 0.0, float(width), float(height))
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (float(left), float(top), float(left + side), float(top + side))


def resize_for_model(image: Image.Image, contract: InputContract) -> Image.Image:
    """Crop to whole pixels first, then resize: the two steps an app reimplements exactly."""
    if contract.resize == CENTER_CROP and image.width != image.height:
        image = image.crop(tuple(int(v) for v in crop_box(image.width, image.height, contract)))
    return image.resize((contract.width, contract.height), Image.Resampling.BILINEAR)


def preprocess(source: ImageInput, contract: InputContract) -> np.ndarray:
    """One image -> float32 array in the contract's layout without the batch axis."""
    image = resize_for_model(load_image(source), contract)
    array = np.asarray(image, dtype=np.float32)  # HWC, 0-255
    if contract.layout == "NCHW":
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    return array


def preprocess_batch(sources: Iterable[ImageInput], contract: InputContract) -> np.ndarray:
    return np.stack([preprocess(s, contract) for s in sources])

