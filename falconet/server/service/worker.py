"""The process that trains one iteration (or builds one export), apart from the API server.

``python -m falconet.server.service.worker train DATA_DIR ITERATION`` and
``... export DATA_DIR ITERATION PLATFORM [FLAVOR]``. The worker owns the final state of its job:
it writes Completed/Done or Failed (with the reason) itself, so the result lands even when the
service was restarted in between; the service only steps in when a worker dies without a word.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import and_, select, update

from falconet.core.errors import FalconetError
from falconet.server.service import db
from falconet.server.service.iterations import COMPLETED, FAILED
from falconet.server.service.settings import open_storage

#: Progress is written at most this often: the API reads it, the database need not see every step.
PROGRESS_EVERY_S = 1.0


def training_data(row: Any, store: Any, out: Path) -> tuple[Path, str]:
    """Write the iteration's snapshot as a COCO JSON over the stored images; (file, task)."""
    # Images without a category become Negative (multiclass) or all-zero targets (multilabel) in the reader.
    from falconet.core.manifest import DETECTION, MULTICLASS, MULTILABEL

    out.mkdir(parents=True, exist_ok=True)
    trained = row.tags
    negative = {t["id"] for t in trained if t["type"] == "Negative"}
    categories = [{"id": i + 1, "name": t["name"]} for i, t in enumerate(trained) if t["id"] not in negative]
    category_of = {t["id"]: i + 1 for i, t in enumerate(trained) if t["id"] not in negative}
    images, annotations = [], []
    for n, item in enumerate(row.snapshot, start=1):
        path = store.path(item["sha256"], item["format"])
        images.append({"id": n, "file_name": str(path), "width": item["width"], "height": item["height"]})
        for tag, left, top, width, height in item["regions"]:
            w, h = item["width"], item["height"]
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": category_of[tag],
                                "bbox": [left * w, top * h, width * w, height * h], "area": width * w * height * h,
                                "iscrowd": 0})
        for tag in item["tags"]:
            if tag in category_of:
                annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": category_of[tag], "iscrowd": 0})
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8")
    detection = any(item["regions"] for item in row.snapshot)
    task = DETECTION if detection else (MULTICLASS if row.classification_type == "Multiclass" else MULTILABEL)
    return path, task


def train(data_dir: Path, iteration_id: str) -> int:
    from falconet.exporter.registry import export
    from falconet.core.labels import NEGATIVE
    from falconet.core.manifest import load_manifest
    from falconet.server.service.catalog import resolve_domain
    from falconet.training.pipeline import TrainRequest, train_package

    engine, store = open_storage(data_dir)
    with engine.connect() as conn:
        row = conn.execute(select(db.iterations).where(db.iterations.c.id == iteration_id)).first()
    if row is None or row.status != "Training":
        return 0
    started = time.monotonic()
    last_write = [0.0]

    def write(**values: Any) -> None:
        with engine.begin() as conn:
            conn.execute(update(db.iterations).where(and_(db.iterations.c.id == iteration_id,
                                                          db.iterations.c.status == "Training"))
                         .values(last_modified=db.now(), training_time_s=time.monotonic() - started, **values))

    def progress(event: dict[str, Any]) -> None:
        if time.monotonic() - last_write[0] >= PROGRESS_EVERY_S:
            last_write[0] = time.monotonic()
            write(progress={k: v for k, v in event.items() if isinstance(v, (int, float, str))})

    write(worker_pid=os.getpid(), progress={"phase": "preparing"})
    home = data_dir / "projects" / row.project_id / "iterations" / iteration_id
    try:
        data, task = training_data(row, store, home / "data")
        domain = resolve_domain(row.domain_id)
        request = TrainRequest(data=data, out=home / "package", domain=domain.name,
                               mode="advanced" if row.training_type == "Advanced" else "quick",
                               budget_s=row.budget_s, task=task, format="coco" if task == "detection" else None,
                               project=row.project_id)
        train_package(request, progress)
        write(progress={"phase": "exporting onnx"})
        manifest = load_manifest(home / "package")
        ids = {t["name"]: t["id"] for t in row.tags}
        negative = next((t["id"] for t in row.tags if t["type"] == "Negative"), None)
        manifest.tag_ids = [ids.get(name) or (negative if name == NEGATIVE else "") or name for name in manifest.labels]
        manifest.save(home / "package")
        export(home / "package", ["onnx"])
        with engine.begin() as conn:
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id).values(
                status=COMPLETED, trained_at=db.now(), last_modified=db.now(), worker_pid=None,
                training_time_s=time.monotonic() - started, progress={"phase": "done"}))
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes the iteration's stated reason
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, FalconetError) else f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        with engine.begin() as conn:
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id).values(
                status=FAILED, error=reason, last_modified=db.now(), worker_pid=None,
                training_time_s=time.monotonic() - started, progress={"phase": "failed"}))
        return 1


def export_zip(data_dir: Path, iteration_id: str, platform: str, flavor: Optional[str]) -> int:
    from falconet.server.service.exports import build_export

    engine, _ = open_storage(data_dir)
    key = and_(db.exports.c.iteration_id == iteration_id, db.exports.c.platform == platform,
               db.exports.c.flavor == (flavor or ""))
    with engine.connect() as conn:
        row = conn.execute(select(db.iterations).where(db.iterations.c.id == iteration_id)).first()
    try:
        file = build_export(data_dir, row, platform, flavor)
        values: dict[str, Any] = {"status": "Done", "file": str(file), "error": None}
        code = 0
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, FalconetError) else f"{type(exc).__name__}: {exc}"
        values, code = {"status": "Failed", "error": reason}, 1
    with engine.begin() as conn:
        conn.execute(update(db.exports).where(key).values(**values))
    return code


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="falconet-service-worker")
    sub = parser.add_subparsers(dest="job", required=True)
    t = sub.add_parser("train")
    t.add_argument("data_dir", type=Path)
    t.add_argument("iteration")
    e = sub.add_parser("export")
    e.add_argument("data_dir", type=Path)
    e.add_argument("iteration")
    e.add_argument("platform")
    e.add_argument("flavor", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.job == "train":
        return train(args.data_dir, args.iteration)
    return export_zip(args.data_dir, args.iteration, args.platform, args.flavor)


if __name__ == "__main__":
    sys.exit(main())
