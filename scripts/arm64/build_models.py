"""Build the two real model packages the arm64 check runs: a classifier and a detector.

Why generated images: the check must run on any CI machine in seconds, and it proves the runtime,
not accuracy. The packages are made with the project's own CLI (``falconet train`` then
``falconet export --format onnx,tflite-int8``), so they are exactly what a user would copy to a Pi.

    python scripts/arm64/build_models.py OUT_DIR
writes OUT_DIR/classifier, OUT_DIR/detector (model packages) and OUT_DIR/images/*.jpg (inputs).
"""
from __future__ import annotations

import subprocess
import sys
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60)}
FORMATS = "onnx,tflite-int8"


def colour_image(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """Noise around one colour: easy to learn in seconds, unique bytes per seed."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour, np.float32) + rng.normal(0, 30, size=(80, 96, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)


def scene_image(path: Path, tag: str, seed: int) -> list[float]:
    """Noise with one red square ('square') or blue disc ('disc'); returns its normalized region."""
    rng = np.random.default_rng(seed)
    size = 96
    image = Image.fromarray(rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8))
    w = int(rng.integers(28, 48))
    x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - w))
    pen = ImageDraw.Draw(image)
    shape = pen.rectangle if tag == "square" else pen.ellipse
    shape([x, y, x + w - 1, y + w - 1], fill=(230, 30, 30) if tag == "square" else (30, 30, 230))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)
    return [x / size, y / size, w / size, w / size]


def falconet(*args: str) -> None:
    """The CLI of the Python running this script (the x86 project venv)."""
    subprocess.run([sys.executable, "-m", "falconet.cli", *args], check=True)


def build(out: Path) -> None:
    data = out / "data"
    seed = 0
    for tag in COLOURS:
        for i in range(14):
            colour_image(data / "colours" / tag / f"{i}.jpg", COLOURS[tag], seed)
            seed += 1
    regions = {}
    for t, tag in enumerate(("square", "disc")):
        for i in range(18):
            name = f"{tag}_{i}.jpg"
            regions[name] = [scene_image(data / "scenes" / tag / name, tag, 100 * t + i)]
    (data / "scenes" / "regions.json").write_text(json.dumps(regions))

    # Inputs the devices run on: images neither model trained on.
    images = out / "images"
    for i, tag in enumerate(COLOURS):
        colour_image(images / f"colour_{tag}.jpg", COLOURS[tag], 1000 + i)
    for i, tag in enumerate(("square", "disc")):
        scene_image(images / f"scene_{tag}.jpg", tag, 2000 + i)

    falconet("train", str(data / "colours"), "--out", str(out / "classifier"), "--domain", "general-compact")
    falconet("train", str(data / "scenes"), "--out", str(out / "detector"))
    # The check is about the runtime giving x86's answers, not about int8 accuracy: a few seconds of
    # training make a weak detector whose int8 file may miss the exporter's accuracy gate. Keep the
    # file anyway; the manifest still records its measured drop.
    for package in ("classifier", "detector"):
        falconet("export", str(out / package), "--format", FORMATS, "--accept-degradation")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
