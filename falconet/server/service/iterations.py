"""Iterations: snapshot the workspace and train it, then read, rename, publish or delete.

Training validation happens here, in the request, with the hosted service's error codes, so a
user learns at once that a tag lacks images; the worker then only trains. The snapshot (which
images with which tags and boxes) is stored on the iteration row, so later edits of the
workspace never change what an iteration says it trained on.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from falconet.server.service import db
from falconet.server.service.catalog import resolve_domain
from falconet.server.service.errors import bad_request, not_found
from falconet.server.service.repository import NEGATIVE, Repository

MAX_ITERATIONS = 20
MIN_IMAGES_CLASSIFICATION = 5
MIN_IMAGES_DETECTION = 15
TRAINING, COMPLETED, FAILED = "Training", "Completed", "Failed"


class Iterations:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.engine = repo.engine

    def package_dir(self, project_id: str, iteration_id: str) -> Path:
        return self.repo.data_dir / "projects" / project_id / "iterations" / iteration_id / "package"

    def row(self, conn: Connection, project_id: str, iteration_id: str) -> Any:
        row = conn.execute(select(db.iterations).where(and_(db.iterations.c.id == iteration_id,
                                                            db.iterations.c.project_id == project_id))).first()
        if row is None:
            raise not_found("Iteration", iteration_id)
        return row

    def get(self, project_id: str, iteration_id: str) -> Any:
        with self.engine.connect() as conn:
            self.repo.project(conn, project_id)
            return self.row(conn, project_id, iteration_id)

    def list(self, project_id: str) -> list[Any]:
        with self.engine.connect() as conn:
            self.repo.project(conn, project_id)
            return list(conn.execute(select(db.iterations).where(db.iterations.c.project_id == project_id)
                                     .order_by(db.iterations.c.created)))

    def latest_completed(self, project_id: str) -> Any:
        with self.engine.connect() as conn:
            self.repo.project(conn, project_id)
            row = conn.execute(select(db.iterations).where(and_(db.iterations.c.project_id == project_id,
                                                                db.iterations.c.status == COMPLETED))
                               .order_by(db.iterations.c.created.desc())).first()
        if row is None:
            raise bad_request("BadRequestIterationIsNotTrained", "The project has no trained iteration yet; train first.")
        return row

    def completed(self, project_id: str, iteration_id: Optional[str]) -> Any:
        """The iteration a quick test or export names (default: the newest completed one)."""
        if not iteration_id:
            return self.latest_completed(project_id)
        row = self.get(project_id, iteration_id)
        if row.status != COMPLETED:
            raise bad_request("BadRequestIterationIsNotTrained", f"Iteration {row.name!r} is {row.status}, not Completed.")
        return row

    # ------------------------------------------------------------------ training
    def start(self, project_id: str, training_type: str = "Regular", budget_hours: int = 0, force: bool = False,
              selected_tags: Sequence[str] = (), quick_budget_s: Optional[float] = None) -> Any:
        """Validate the workspace, snapshot it and create an iteration in status Training."""
        kind = next((t for t in ("Regular", "Advanced") if t.lower() == (training_type or "Regular").lower()), None)
        if kind is None:
            raise bad_request("BadRequestInvalid", "trainingType is Regular or Advanced.")
        if kind == "Advanced" and (budget_hours or 0) < 1:
            raise bad_request("BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining",
                              "Advanced training needs reservedBudgetInHours of at least 1.")
        with self.engine.begin() as conn:
            project = self.repo.project(conn, project_id)
            detection = self.repo.is_detection(project)
            existing = list(conn.execute(select(db.iterations).where(db.iterations.c.project_id == project_id)
                                         .order_by(db.iterations.c.created)))
            if any(i.status == TRAINING for i in existing):
                raise bad_request("BadRequestTrainingAlreadyInProgress", "The project is training already; wait for it to finish.")
            if len(existing) >= MAX_ITERATIONS:
                raise bad_request("BadRequestExceedIterationPerProjectLimit",
                                  f"A project keeps at most {MAX_ITERATIONS} iterations; delete one first.")
            tags = self.repo.tags(conn, project_id)
            snapshot, trained_tags = self._snapshot(conn, project, tags, detection, list(selected_tags))
            digest = hashlib.sha256(json.dumps([snapshot, project.domain_id, project.classification_type],
                                               sort_keys=True).encode()).hexdigest()
            last = next((i for i in reversed(existing) if i.status == COMPLETED), None)
            if not force and last is not None and last.snapshot_hash == digest and last.training_type == kind:
                raise bad_request("BadRequestTrainingNotNeeded",
                                  "Nothing changed since the last iteration; pass forceTrain=true to train again.")
            ident, stamp = db.new_id(), db.now()
            budget_s = budget_hours * 3600.0 if kind == "Advanced" else quick_budget_s
            conn.execute(insert(db.iterations).values(
                id=ident, project_id=project_id, name=f"Iteration {len(existing) + 1}", status=TRAINING,
                created=stamp, last_modified=stamp, domain_id=project.domain_id,
                classification_type=project.classification_type, training_type=kind,
                reserved_budget_in_hours=int(budget_hours or 0) if kind == "Advanced" else 0, budget_s=budget_s,
                training_time_s=0.0, progress={"phase": "queued"}, selected_tags=list(selected_tags),
                snapshot=snapshot, snapshot_hash=digest, tags=trained_tags))
            return self.row(conn, project_id, ident)

    def _snapshot(self, conn: Connection, project: Any, tags: list[Any], detection: bool,
                  selected: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        by_id = {t.id: t for t in tags}
        unknown = [t for t in selected if t not in by_id]
        if unknown:
            raise not_found("Tag", unknown[0])
        negative = next((t for t in tags if t.type == NEGATIVE), None)
        wanted = set(selected) if selected else {t.id for t in tags}
        rows = self.repo.image_rows(conn, project.id, order="Oldest")
        tags_by, regions_by = self.repo.labels_of(conn, [r.id for r in rows])
        counts = {t: 0 for t in wanted}
        snapshot = []
        for image in rows:
            if detection:
                boxes = [[r.tag_id, r.left, r.top, r.width, r.height] for r in regions_by[image.id] if r.tag_id in wanted]
                if not boxes and not any(t.tag_id in wanted or (negative and t.tag_id == negative.id) for t in tags_by[image.id]):
                    continue  # untagged images are not training data
                for tag in {b[0] for b in boxes} | {t.tag_id for t in tags_by[image.id]
                                                    if negative and t.tag_id == negative.id}:
                    counts[tag] = counts.get(tag, 0) + 1
                snapshot.append({"image": image.id, "sha256": image.sha256, "format": image.format, "width": image.width,
                                 "height": image.height, "tags": [], "regions": boxes})
            else:
                on = [t.tag_id for t in tags_by[image.id] if t.tag_id in wanted or (negative and t.tag_id == negative.id)]
                if not on:
                    continue
                for tag in on:
                    if tag in counts:
                        counts[tag] += 1
                snapshot.append({"image": image.id, "sha256": image.sha256, "format": image.format, "width": image.width,
                                 "height": image.height, "tags": sorted(on), "regions": []})
        if detection and negative is not None and counts.get(negative.id):
            raise bad_request("BadRequestDetectionTrainingNotAllowNegativeTag",
                              "Object detection does not train on a Negative tag: every unboxed area is background already.")
        regular = [t for t in wanted if by_id[t].type != NEGATIVE]
        minimum = MIN_IMAGES_DETECTION if detection else MIN_IMAGES_CLASSIFICATION
        short = sorted(f"{by_id[t].name} ({counts[t]})" for t in regular if counts[t] < minimum)
        code = ("BadRequestDetectionTrainingValidationFailed" if detection else
                "BadRequestMultiClassClassificationTrainingValidationFailed" if project.classification_type == "Multiclass"
                else "BadRequestMultiLabelClassificationTrainingValidationFailed")
        if short:
            raise bad_request(code, f"Every tag needs at least {minimum} images to train; too few: {', '.join(short)}.")
        has_negative = bool(negative and counts.get(negative.id))
        if not detection and len(regular) < 2 and not has_negative:
            raise bad_request(code, "Classification needs at least two tags, or one tag and images tagged Negative.")
        if detection and not regular:
            raise bad_request(code, "Object detection needs at least one tag with boxes.")
        if not detection and project.classification_type == "Multiclass":
            doubled = sum(1 for s in snapshot if len(s["tags"]) > 1)
            if doubled:
                raise bad_request(code, f"{doubled} images carry more than one tag, which a Multiclass project cannot "
                                        "train on; remove the extra tags or make the project Multilabel.")
        trained = [{"id": t.id, "name": t.name, "type": t.type} for t in tags
                   if t.id in regular or (has_negative and negative and t.id == negative.id)]
        return snapshot, trained

    def set_progress(self, iteration_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id)
                         .values(last_modified=db.now(), **values))

    def fail(self, iteration_id: str, reason: str) -> bool:
        """Mark a Training iteration Failed; False when it had finished meanwhile."""
        with self.engine.begin() as conn:
            done = conn.execute(update(db.iterations).where(and_(db.iterations.c.id == iteration_id,
                                                                 db.iterations.c.status == TRAINING))
                                .values(status=FAILED, error=reason, last_modified=db.now(), worker_pid=None)).rowcount
        return bool(done)

    def training(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(db.iterations).where(db.iterations.c.status == TRAINING)
                                     .order_by(db.iterations.c.created)))

    # ------------------------------------------------------------------ changes
    def rename(self, project_id: str, iteration_id: str, body: dict[str, Any]) -> Any:
        name = str(body.get("name") or "").strip()
        if not name or len(name) > 256:
            raise bad_request("BadRequestIterationName", "An iteration needs a name of 1 to 256 characters.")
        with self.engine.begin() as conn:
            self.row(conn, project_id, iteration_id)
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id).values(name=name, last_modified=db.now()))
            return self.row(conn, project_id, iteration_id)

    def delete(self, project_id: str, iteration_id: str) -> None:
        with self.engine.begin() as conn:
            row = self.row(conn, project_id, iteration_id)
            if row.publish_name:
                raise bad_request("BadRequestIterationIsPublished",
                                  f"Iteration {row.name!r} is published as {row.publish_name!r}; unpublish it first.")
            if row.status == TRAINING:
                raise bad_request("BadRequestTrainingAlreadyInProgress", "The iteration is still training.")
            conn.execute(delete(db.iterations).where(db.iterations.c.id == iteration_id))
        shutil.rmtree(self.package_dir(project_id, iteration_id).parent, ignore_errors=True)

    def publish(self, project_id: str, iteration_id: str, name: str, prediction_id: str, overwrite: bool = False) -> None:
        name = (name or "").strip()
        if not name or len(name) > 256 or "/" in name:
            raise bad_request("BadRequestInvalidPublishName", "publishName must be 1 to 256 characters without '/'.")
        if not prediction_id:
            raise bad_request("BadRequestInvalidPublishTarget", "predictionId (the prediction resource id) is required.")
        with self.engine.begin() as conn:
            row = self.row(conn, project_id, iteration_id)
            if row.status != COMPLETED:
                raise bad_request("BadRequestIterationIsNotTrained", f"Iteration {row.name!r} is {row.status}, not Completed.")
            holder = conn.execute(select(db.iterations).where(and_(db.iterations.c.project_id == project_id,
                                                                   db.iterations.c.publish_name == name))).first()
            if holder is not None and holder.id != iteration_id:
                if not overwrite:
                    raise bad_request("BadRequestInvalidPublishName",
                                      f"{name!r} is the published name of {holder.name!r}; pass overwrite=true to move it.")
                conn.execute(update(db.iterations).where(db.iterations.c.id == holder.id)
                             .values(publish_name=None, prediction_id=None))
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id)
                         .values(publish_name=name, prediction_id=prediction_id, last_modified=db.now()))

    def unpublish(self, project_id: str, iteration_id: str) -> None:
        with self.engine.begin() as conn:
            row = self.row(conn, project_id, iteration_id)
            if not row.publish_name:
                raise bad_request("BadRequestIterationNotPublished", f"Iteration {row.name!r} is not published.")
            conn.execute(update(db.iterations).where(db.iterations.c.id == iteration_id)
                         .values(publish_name=None, prediction_id=None, last_modified=db.now()))

    def published(self, project_id: str, name: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(db.iterations).where(and_(db.iterations.c.project_id == project_id,
                                                                func.lower(db.iterations.c.publish_name) == name.lower()))).first()
        if row is None:
            raise not_found("Iteration", f"published as {name!r} in project {project_id}")
        return row
