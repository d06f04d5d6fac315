"""Device profiles (``devices/*.json``): which formats, backend, threads and precision suit a device.

The profiles live in the repository's top-level ``devices/`` folder, next to the set-up notes and
the figures people measured on the hardware; a path to any profile file works too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falconet.core.errors import FalconetError

DEVICES_DIR = Path(__file__).resolve().parents[2] / "devices"
_REQUIRED = ("name", "title", "formats", "backend", "threads", "precision", "verified")


def list_devices(directory: Path = DEVICES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def load_device(name_or_path: str, directory: Path = DEVICES_DIR) -> dict[str, Any]:
    """A profile by name (``rpi5``) or by path; a clear error lists the known names."""
    path = Path(name_or_path)
    if not (path.suffix == ".json" and path.is_file()):
        path = Path(directory) / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(list_devices(directory)) or f"none found in {directory}"
        raise FalconetError(f"Unknown device {name_or_path!r}; known: {known}.", code="BadRequestDevice", status=400)
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FalconetError(f"{path} is not valid JSON: {exc}", code="BadRequestDevice", status=400) from exc
    missing = [k for k in _REQUIRED if k not in profile]
    if missing:
        raise FalconetError(f"{path} lacks {', '.join(missing)}.", code="BadRequestDevice", status=400)
    return profile
