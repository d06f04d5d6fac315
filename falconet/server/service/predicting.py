"""Running trained iterations: quick tests, published prediction routes, stored predictions.

Each iteration's ONNX file (exported when its training ended) is loaded once into an
onnxruntime session and kept; requests run in worker threads behind a semaphore, so the event
loop keeps serving the API while an image is scored.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import and_, delete, insert, select

from falconet.core.errors import FalconetError
from falconet.core.images import ImageInput
from falconet.server.service import db
from falconet.server.service.ingest import ACCEPTED_FORMATS
from falconet.server.service.store import LocalImageStore


class Predictors:
    """One runtime Predictor per iteration, loaded on first use."""

    def __init__(self, package_dir_of: Any, workers: int = 2) -> None:
        self.package_dir_of = package_dir_of
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(workers)

    def get(self, row: Any) -> Any:
        with self._lock:
            if row.id not in self._loaded:
                import falconet

                package = self.package_dir_of(row.project_id, row.id)
                if not (Path(package) / "manifest.json").is_file():
                    raise FalconetError(f"Iteration {row.name!r} has no model package.", code="ErrorPredictionModelNotFound",
                                        status=404)
                self._loaded[row.id] = falconet.load(package, backend="onnx")
            return self._loaded[row.id]

    def forget(self, iteration_id: str) -> None:
        with self._lock:
            self._loaded.pop(iteration_id, None)

    def predict(self, row: Any, image: ImageInput) -> list[Any]:
        """Scores encoded bytes, or an image the request has decoded already (and need not decode again)."""
        with self.slots:
            return self.get(row).predict(image)


def uncertainty(results: list[dict[str, Any]]) -> float:
    """Entropy of the top prediction's probability: 1.0 when the model is torn (p = 0.5), 0 when sure."""
    if not results:
        return 1.0
    p = min(max(max(r["probability"] for r in results), 1e-9), 1 - 1e-9)
    return float(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


class StoredPredictions:
    """The Predictions tab: prediction images kept with what the model said about them."""

    def __init__(self, engine: Any, store: LocalImageStore) -> None:
        self.engine, self.store = engine, store

    def save(self, project_id: str, iteration_id: str, data: bytes, width: int, height: int, fmt: str,
             results: list[dict[str, Any]], application: Optional[str]) -> str:
        extension = ACCEPTED_FORMATS.get(fmt.upper(), "jpg") if fmt else "jpg"
        sha = self.store.put(data, extension)
        ident = db.new_id()
        with self.engine.begin() as conn:
            conn.execute(insert(db.predictions).values(id=ident, project_id=project_id, iteration_id=iteration_id,
                                                       sha256=sha, format=extension, width=width, height=height,
                                                       application=application, created=db.now(), results=results))
        return ident

    def query(self, project_id: str, token: dict[str, Any]) -> tuple[list[Any], Optional[str]]:
        query = select(db.predictions).where(db.predictions.c.project_id == project_id)
        if token.get("iterationId"):
            query = query.where(db.predictions.c.iteration_id == token["iterationId"])
        if token.get("application"):
            query = query.where(db.predictions.c.application == token["application"])
        if token.get("startTime"):
            query = query.where(db.predictions.c.created >= str(token["startTime"]))
        if token.get("endTime"):
            query = query.where(db.predictions.c.created <= str(token["endTime"]))
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        for tag in token.get("tags") or []:
            low, high = float(tag.get("minThreshold") or 0.0), float(tag.get("maxThreshold") or 1.0)
            rows = [r for r in rows if any(p["tagId"] == tag.get("id") and low <= p["probability"] <= high for p in r.results)]
        order = (token.get("orderBy") or "Newest").lower()
        if order == "suggested":
            rows.sort(key=lambda r: -uncertainty(r.results))
        else:
            rows.sort(key=lambda r: r.created, reverse=order != "oldest")
        start = int(token.get("continuation") or 0)
        count = max(1, min(int(token.get("maxCount") or 50), 256))
        page = rows[start:start + count]
        return page, (str(start + count) if start + count < len(rows) else None)

    def get_many(self, project_id: str, ids: list[str]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.id: r for r in conn.execute(select(db.predictions).where(and_(
                db.predictions.c.project_id == project_id, db.predictions.c.id.in_(ids))))}

    def delete(self, project_id: str, ids: list[str]) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(db.predictions).where(and_(db.predictions.c.project_id == project_id,
                                                                   db.predictions.c.id.in_(ids)))).rowcount


#: Class-agnostic proposals returned per image, best first.
MAX_PROPOSALS = 20


def region_proposals(predictor: Any, data: bytes) -> list[dict[str, Any]]:
    """Boxes where the detector sees *some* object, whatever its tag, to start labelling from.

    The trained detector's per-box best class score is its objectness; NMS runs across classes,
    so one object gives one proposal even when two tags compete for it.
    """
    import numpy as np

    boxes, scores = predictor.run(predictor.preprocess(data)[None])[:2]
    objectness = scores[0].max(axis=1, keepdims=True)
    found = predictor.decode(boxes[0], objectness, 0.01, MAX_PROPOSALS)
    return [{"confidence": float(s), "boundingBox": {"left": x1, "top": y1, "width": x2 - x1, "height": y2 - y1}}
            for _, s, x1, y1, x2, y2 in found if np.isfinite(s)]
