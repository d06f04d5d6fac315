"""Shared fixtures: small images the tests draw themselves, and the optional real datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
