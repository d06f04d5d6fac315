"""labels.txt and tag identities.

Tag ids are UUIDs derived from the project and tag name, so the same tag keeps the same id across
retraining and across every exported copy of a model: clients written against the hosted
service key on ``tagId``.
"""
from __future__ import annotations

import uuid
from pathlib import Path

NEGATIVE = "Negative"
_NAMESPACE = uuid.UUID("6f1c1a3e-5a0c-4b6e-9d0b-2f6c1e0d9a41")


def is_negative(name: str) -> bool:
    return name.strip().lower() == "negative"


def tag_id(name: str, project: str = "") -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{project}/{name}"))


def write_labels(path: Path, labels: list[str]) -> None:
    for label in labels:
        if "\n" in label or "\r" in label:
            raise ValueError(f"A label cannot contain a line break: {label!r}")
    Path(path).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def read_labels(path: Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line != ""]
