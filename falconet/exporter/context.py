"""What every export target may need besides the model: calibration images and an fp32 ONNX file.

Kept in one place so the int8 targets (ONNX, TFLite, OpenVINO) calibrate on the same inputs,
produced by the same preprocessing as inference.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from falconet.core.errors import ExportError
from falconet.core.images import load_image
from falconet.core.manifest import DETECTION, Manifest
from falconet.core.preprocess import preprocess

#: int8 calibration views; a 50-image project gets each image about three times, augmented
CALIBRATION_VIEWS = 160


@dataclass
class ExportContext:
    name: str  # the format name, e.g. "tflite-int8"
    precision: str  # fp32, fp16 or int8
    package_dir: Path
    manifest: Manifest
    model: Any  # the torch module (eval mode)
    _calibration: list[np.ndarray] | None = field(default=None, repr=False)

    def training_images(self) -> list[Path]:
        """The images the model trained on (never the held-out ones), as recorded in the manifest."""
        return training_images(self.manifest)

    def calibration_inputs(self, count: int = CALIBRATION_VIEWS, layout: str = "NCHW", seed: int = 0) -> list[np.ndarray]:
        """``count`` preprocessed batches of one (float32, 0-255): every training image once as inference
        sees it, then augmented views (training augmentation) until ``count`` is reached."""
        if self._calibration is None or len(self._calibration) != count:
            self._calibration = calibration_inputs(self.manifest, self.training_images(), count, seed)
        if layout == "NHWC":
            return [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in self._calibration]
        return list(self._calibration)

    def write_fp32_onnx(self, path: Path) -> Path:
        """An fp32 ONNX file of the model at ``path`` (the base of the derived ONNX and OpenVINO files)."""
        from falconet.exporter.onnx_target import write_onnx

        write_onnx(self.model, self.manifest, Path(path))
        return Path(path)


def training_images(manifest: Manifest) -> list[Path]:
    from falconet.training.pipeline import read_dataset

    data = manifest.training.get("data", {})
    source = data.get("source")
    if not source or not Path(source).exists():
        raise ExportError(f"The training images ({source}) are not reachable; int8 calibration needs them.",
                          code="CalibrationDataMissing")
    dataset = read_dataset(Path(source), manifest.task if manifest.task == DETECTION else None,
                           data.get("format") if manifest.task == DETECTION else None, for_training=False)
    split = manifest.training.get("split", {})
    held = set()
    if split.get("method") == "holdout":
        root = Path(split.get("source", source))
        held = {(root / n).resolve() for n in split.get("held_out", [])}
    return [s.path for s in dataset.samples if Path(s.path).resolve() not in held]


def calibration_inputs(manifest: Manifest, images: list[Path], count: int, seed: int = 0) -> list[np.ndarray]:
    if not images:
        raise ExportError("No training images to calibrate on.", code="CalibrationDataMissing")
    rng = random.Random(seed)
    contract = manifest.input.with_layout("NCHW")
    out: list[np.ndarray] = []
    order = list(images)
    rng.shuffle(order)
    for i in range(count):
        path = order[i % len(order)]
        try:
            image = load_image(path)
        except Exception:  # noqa: BLE001 - a file that vanished or broke since training is just skipped
            continue
        view = image if i < len(order) else _augment(image, rng, manifest.task == DETECTION)
        out.append(preprocess(view, contract)[None])
    if not out:
        raise ExportError("None of the training images could be read for calibration.", code="CalibrationDataMissing")
    return out


def _augment(image: Image.Image, rng: random.Random, detection: bool) -> Image.Image:
    """The training augmentation, in short: a random crop, a flip, colour jitter."""
    from falconet.training.augment import color_jitter

    w, h = image.size
    scale = rng.uniform(0.5 if detection else 0.3, 1.0) ** 0.5
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    view = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return color_jitter(view, rng, 0.3)
