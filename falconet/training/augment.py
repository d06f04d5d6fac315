"""Classification augmentation on PIL images (detection's box-aware version is in its trainer).

Augmented views end in the same resize as :func:`falconet.core.preprocess.preprocess`, so the
network sees training inputs on the same pixel scale as at inference.
"""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageEnhance

from falconet.core.preprocess import InputContract


def random_resized_crop(image: Image.Image, size: int, rng: random.Random, scale: tuple[float, float] = (0.3, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def color_jitter(image: Image.Image, rng: random.Random, strength: float = 0.3) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    return image


def augmented_view(image: Image.Image, contract: InputContract, rng: random.Random,
                   scale: tuple[float, float] = (0.3, 1.0), jitter: float = 0.3) -> np.ndarray:
    """One random training view as float32 CHW 0-255."""
    view = random_resized_crop(image, contract.width, rng, scale)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if jitter > 0:
        view = color_jitter(view, rng, jitter)
    return np.asarray(view, dtype=np.float32).transpose(2, 0, 1).copy()


def flipped(array_chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array_chw[:, :, ::-1])
