"""The in-memory dataset every reader produces and every trainer consumes.

Boxes are normalised (0-1) x1, y1, x2, y2 on the upright image (EXIF orientation applied), the
same frame the runtime reports in; readers convert from their format's convention on the way in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass
class Sample:
    """One image: its tags (classification) or boxes (detection). Empty means negative/background."""

    path: Path
    labels: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    width: int = 0
    height: int = 0
    sha256: str = ""


@dataclass
class Issue:
    """One finding of validation, shown to the user before training."""

    kind: str  # stable code, e.g. "corrupt", "too-small", "duplicate", "box-clipped"
    path: str
    message: str
    severity: str = "warning"  # "warning" (skipped or fixed) or "error" (training refused)


@dataclass
class Dataset:
    task: str
    labels: list[str]
    samples: list[Sample]
    source: str = ""
    format: str = ""
    issues: list[Issue] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Images per tag (detection: images containing the tag)."""
        counts = {label: 0 for label in self.labels}
        for sample in self.samples:
            present = {b.label for b in sample.boxes} | set(sample.labels)
            for label in present:
                if label in counts:
                    counts[label] += 1
        return counts
