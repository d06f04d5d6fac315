"""The interchange types every room speaks, and their Custom Vision JSON form."""
from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Optional


@dataclass(frozen=True)
class BoundingBox:
    """Custom Vision's box: top-left corner and size, as fractions of the image."""

    left: float
    top: float
    width: float
    height: float

    @classmethod
    def from_xyxy(cls, x1: float, y1: float, x2: float, y2: float) -> "BoundingBox":
        x1, x2 = max(0.0, min(1.0, x1)), max(0.0, min(1.0, x2))
        y1, y2 = max(0.0, min(1.0, y1)), max(0.0, min(1.0, y2))
        return cls(float(x1), float(y1), float(max(0.0, x2 - x1)), float(max(0.0, y2 - y1)))

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)

    def to_dict(self) -> dict[str, float]:
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Prediction:
    tag_id: str
    tag_name: str
    probability: float
    tag_index: int
    bounding_box: Optional[BoundingBox] = None
    tag_type: str = "Regular"

    def to_dict(self) -> dict[str, Any]:
        """The prediction object of the Custom Vision Prediction API (v3.1 adds tagType)."""
        return {
            "probability": float(self.probability),
            "tagId": self.tag_id,
            "tagName": self.tag_name,
            "boundingBox": self.bounding_box.to_dict() if self.bounding_box else None,
            "tagType": self.tag_type,
        }


def to_custom_vision_json(
    predictions: Iterable[Prediction],
    *,
    project: str = "",
    iteration: str = "",
    prediction_id: str | None = None,
    created: _dt.datetime | None = None,
) -> dict[str, Any]:
    """The ImagePrediction body that the hosted service and its exported containers return."""
    created = created or _dt.datetime.now(_dt.timezone.utc)
    return {
        "id": prediction_id or str(uuid.uuid4()),
        "project": project,
        "iteration": iteration,
        "created": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "predictions": [p.to_dict() for p in predictions],
    }
