"""Shared fixtures: small images the tests draw themselves, small trained packages, and the optional real datasets."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    return Path(os.environ.get("FALCONET_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture
def real_datasets() -> Path:
    root = datasets_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set FALCONET_DATASETS)")
    return root


def draw(path: Path, colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (80, 64), fmt: str | None = None) -> Path:
    """A noisy image dominated by ``colour``: easy to learn, unique bytes per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array(colour, dtype=np.float32)[None, None, :]
    pixels = np.clip(base + rng.normal(0, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt or ("PNG" if path.suffix == ".png" else "JPEG"))
    return path


COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60)}


@pytest.fixture
def tag_folders(tmp_path: Path) -> Path:
    """Folder-per-tag data: red and blue, 6 images each."""
    root = tmp_path / "photos"
    seed = 0
    for tag in ("red", "blue"):
        for i in range(6):
            draw(root / tag / f"{tag}_{i}.jpg", COLOURS[tag], seed)
            seed += 1
    return root


# ------------------------------------------------------------------ small trained packages
# Trained once per session (a real pretrained backbone, seconds of training) with a held-out split
# of 12+ images a tag, so exports have labelled held-out images to measure parity on. Tests that
# export into or damage a package work on copy_package(...).

def _train(data: Path, out: Path, **options: object) -> Path:
    from falconet.training.pipeline import TrainRequest, train_package

    train_package(TrainRequest(data=data, out=out, **options))  # type: ignore[arg-type]
    return out


def colour_tags_package(root: Path, domain: str) -> Path:
    """Red, blue and green photos (14 a tag) trained into root/package with ``domain``."""
    seed = 0
    for tag in ("red", "blue", "green"):
        for i in range(14):
            draw(root / "photos" / tag / f"{i}.jpg", COLOURS[tag], seed, size=(96, 80))
            seed += 1
    return _train(root / "photos", root / "package", domain=domain)


@pytest.fixture(scope="session")
def multiclass_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_tags_package(tmp_path_factory.mktemp("multiclass"), "general-compact")


@pytest.fixture(scope="session")
def multilabel_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Left half and right half colours: tags 'red' and/or 'blue' (both, one, or Negative)."""
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(3)
    rows = []
    combos = [("red",), ("blue",), ("red", "blue")] * 6 + [()] * 6
    for i, tags in enumerate(combos):
        pixels = rng.integers(100, 150, size=(72, 96, 3), dtype=np.uint8)
        if "red" in tags:
            pixels[:, :48] = np.clip(np.array(COLOURS["red"]) + rng.normal(0, 20, (72, 48, 3)), 0, 255)
        if "blue" in tags:
            pixels[:, 48:] = np.clip(np.array(COLOURS["blue"]) + rng.normal(0, 20, (72, 48, 3)), 0, 255)
        name = f"img_{i}.jpg"
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name, quality=95)
        rows.append((f"images/{name}", ";".join(tags) if tags else "negative"))
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "tags"])
        writer.writerows(rows)
    return _train(root / "labels.csv", root / "package", domain="general-compact-mobilenet")


def draw_scene(path: Path, tag: str, seed: int) -> list[float]:
    """Noise with one red square (tag 'square') or blue disc ('disc'); returns its region."""
    rng = np.random.default_rng(seed)
    size = 96
    image = Image.fromarray(rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8))
    w = int(rng.integers(28, 48))
    x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - w))
    pen = ImageDraw.Draw(image)
    if tag == "square":
        pen.rectangle([x, y, x + w - 1, y + w - 1], fill=(230, 30, 30))
    else:
        pen.ellipse([x, y, x + w - 1, y + w - 1], fill=(30, 30, 230))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95)
    return [x / size, y / size, w / size, w / size]


def draw_scenes(data: Path, per_tag: int) -> Path:
    """``per_tag`` squares and discs as Custom Vision regions (a folder per tag plus regions.json)."""
    regions = {}
    for t, tag in enumerate(("square", "disc")):
        for i in range(per_tag):
            name = f"{tag}_{i}.jpg"
            regions[name] = [draw_scene(data / tag / name, tag, 100 * t + i)]
    (data / "regions.json").write_text(json.dumps(regions))
    return data


#: A wall-clock budget (20 s: 29 steps on a quiet 2-core machine, more or fewer elsewhere) left its
#: confidence to the machine's speed: near 30 steps its best score (~0.18) sits barely above its
#: other candidates, where int8 rounding may reorder them (CI on 2026-11-27: an int8 mAP drop
#: > 0.01). 40 steps take ~28 s on 2 cores.
DETECTION_FIXTURE_STEPS = 40


@pytest.fixture(scope="session")
def detection_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick-mode detector trained for exactly DETECTION_FIXTURE_STEPS steps, so it is the same
    model (up to float rounding) on a busy machine as on a quiet one. Its best score per held-out image is 0.35-0.40 and
    its candidates' best scores span 0.08-0.40: a real ranking, which the fp16/int8 tests rely on."""
    root = tmp_path_factory.mktemp("detection")
    return _train(draw_scenes(root / "data", 18), root / "package", detector_steps=DETECTION_FIXTURE_STEPS)


def copy_package(package: Path, tmp_path: Path) -> Path:
    """A private copy a test may export into or damage (the training data stays where it was)."""
    target = tmp_path / package.name
    shutil.copytree(package, target)
    return target
