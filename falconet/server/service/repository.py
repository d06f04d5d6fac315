"""Projects, tags, images and regions: the workspace that training snapshots.

Every operation is one database transaction. Image bytes go to the store before the row that
names them, so a crash leaves no row without its image; a batch is written image by image, so a
failure in the middle keeps the images already accepted and reports the rest.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from falconet.server.service import db
from falconet.server.service.catalog import OBJECT_DETECTION, domain_id, domain_type, resolve_domain
from falconet.server.service.errors import bad_request, not_found
from falconet.server.service.ingest import CheckedImage, Refusal
from falconet.server.service.store import LocalImageStore

MAX_BATCH = 64
MAX_TAGS_PER_IMAGE = 100
MAX_REGIONS_PER_IMAGE = 300
MAX_IMAGES_PER_PROJECT = 100_000
MAX_TAGS_PER_PROJECT = 500
MAX_METADATA = 10
NEGATIVE, REGULAR, GENERAL_PRODUCT = "Negative", "Regular", "GeneralProduct"
CLASSIFICATION_TYPES = ("Multiclass", "Multilabel")


@dataclass
class Upload:
    """One image of a create-images batch: checked bytes (or why not), with its tags and regions."""

    image: CheckedImage | Refusal
    tag_ids: list[str] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)
    source_url: Optional[str] = None


class Repository:
    def __init__(self, engine: Engine, store: LocalImageStore, data_dir: Path) -> None:
        self.engine, self.store, self.data_dir = engine, store, Path(data_dir)

    # ------------------------------------------------------------------ projects
    def project(self, conn: Connection, project_id: str) -> Any:
        row = conn.execute(select(db.projects).where(db.projects.c.id == project_id)).first()
        if row is None:
            raise not_found("Project", project_id)
        return row

    def is_detection(self, row: Any) -> bool:
        return domain_type(resolve_domain(row.domain_id)) == OBJECT_DETECTION

    def create_project(self, name: str, description: str = "", domain: Optional[str] = None,
                       classification_type: Optional[str] = None, platforms: Sequence[str] = ()) -> Any:
        name = (name or "").strip()
        if not name or len(name) > 256:
            raise bad_request("BadRequestProjectName", "A project needs a name of 1 to 256 characters.")
        chosen = resolve_domain(domain)
        ctype = self._classification_type(chosen.kind, classification_type)
        stamp = db.now()
        with self.engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(db.projects).where(db.projects.c.name == name)).scalar():
                raise bad_request("BadRequestProjectNameNotUnique", f"A project named {name!r} exists already.")
            ident = db.new_id()
            conn.execute(insert(db.projects).values(id=ident, name=name, description=description or "",
                                                    domain_id=domain_id(chosen), classification_type=ctype,
                                                    target_export_platforms=list(platforms or []),
                                                    created=stamp, last_modified=stamp))
            return self.project(conn, ident)

    @staticmethod
    def _classification_type(kind: str, requested: Optional[str]) -> Optional[str]:
        if kind == "detection":
            return None
        if requested is None:
            return "Multiclass"
        match = next((t for t in CLASSIFICATION_TYPES if t.lower() == requested.lower()), None)
        if match is None:
            raise bad_request("BadRequestProjectUnknownClassification",
                              f"classificationType must be Multiclass or Multilabel, not {requested!r}.")
        return match

    def list_projects(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(db.projects).order_by(db.projects.c.created)))

    def thumbnails(self, project_ids: Sequence[str]) -> dict[str, str]:
        """Project id -> ``sha256.format`` of its newest image, for any number of projects in one query.

        A project list showed one query per project; ranking each project's images in the
        database keeps it one round trip. Projects without images are absent.
        """
        if not project_ids:
            return {}
        images = db.images.c
        newest_first = func.row_number().over(partition_by=images.project_id, order_by=(images.created.desc(), images.id))
        ranked = (select(images.project_id, images.sha256, images.format, newest_first.label("rank"))
                  .where(images.project_id.in_(list(project_ids))).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(ranked.c.project_id, ranked.c.sha256, ranked.c.format).where(ranked.c.rank == 1))
            return {r.project_id: f"{r.sha256}.{r.format}" for r in rows}

    def get_project(self, project_id: str) -> Any:
        with self.engine.connect() as conn:
            return self.project(conn, project_id)

    def update_project(self, project_id: str, body: dict[str, Any]) -> Any:
        with self.engine.begin() as conn:
            row = self.project(conn, project_id)
            values: dict[str, Any] = {}
            if body.get("name") is not None:
                name = str(body["name"]).strip()
                if not name or len(name) > 256:
                    raise bad_request("BadRequestProjectName", "A project needs a name of 1 to 256 characters.")
                values["name"] = name
            if body.get("description") is not None:
                values["description"] = str(body["description"])
            settings = body.get("settings") or {}
            if settings.get("domainId"):
                new = resolve_domain(settings["domainId"])
                old = resolve_domain(row.domain_id)
                if new.kind != old.kind:
                    raise bad_request("BadRequestProjectUnsupportedDomainTypeChange",
                                      "A project cannot change between classification and object detection.")
                values["domain_id"] = domain_id(new)
            kind = resolve_domain(values.get("domain_id", row.domain_id)).kind
            if settings.get("classificationType") and kind == "classification":
                values["classification_type"] = self._classification_type(kind, settings["classificationType"])
            if settings.get("targetExportPlatforms") is not None:
                values["target_export_platforms"] = list(settings["targetExportPlatforms"])
            values["last_modified"] = db.now()
            conn.execute(update(db.projects).where(db.projects.c.id == project_id).values(**values))
            return self.project(conn, project_id)

    def delete_project(self, project_id: str) -> None:
        with self.engine.begin() as conn:
            self.project(conn, project_id)
            conn.execute(delete(db.projects).where(db.projects.c.id == project_id))
        shutil.rmtree(self.data_dir / "projects" / project_id, ignore_errors=True)

    def touch(self, conn: Connection, project_id: str) -> None:
        conn.execute(update(db.projects).where(db.projects.c.id == project_id).values(last_modified=db.now()))

    # ------------------------------------------------------------------ tags
    def tag(self, conn: Connection, project_id: str, tag_id: str) -> Any:
        row = conn.execute(select(db.tags).where(and_(db.tags.c.id == tag_id, db.tags.c.project_id == project_id))).first()
        if row is None:
            raise not_found("Tag", tag_id)
        return row

    def tags(self, conn: Connection, project_id: str) -> list[Any]:
        return list(conn.execute(select(db.tags).where(db.tags.c.project_id == project_id).order_by(db.tags.c.created, db.tags.c.name)))

    def tag_counts(self, conn: Connection, project_id: str) -> dict[str, int]:
        query = (select(db.image_tags.c.tag_id, func.count()).join(db.images, db.images.c.id == db.image_tags.c.image_id)
                 .where(db.images.c.project_id == project_id).group_by(db.image_tags.c.tag_id))
        return {tag: n for tag, n in conn.execute(query)}

    def create_tag(self, project_id: str, name: str, description: str = "", kind: Optional[str] = None) -> Any:
        name = (name or "").strip()
        if not name or len(name) > 256:
            raise bad_request("BadRequestTagName", "A tag needs a name of 1 to 256 characters.")
        kind = next((k for k in (REGULAR, NEGATIVE, GENERAL_PRODUCT) if k.lower() == (kind or REGULAR).lower()), None)
        if kind is None:
            raise bad_request("BadRequestTagType", "A tag's type is Regular, Negative or GeneralProduct.")
        with self.engine.begin() as conn:
            self.project(conn, project_id)
            existing = self.tags(conn, project_id)
            if any(t.name.lower() == name.lower() for t in existing):
                raise bad_request("BadRequestTagNameNotUnique", f"The project has a tag named {name!r} already.")
            if len(existing) >= MAX_TAGS_PER_PROJECT:
                raise bad_request("BadRequestExceedTagPerProjectLimit", f"A project may have at most {MAX_TAGS_PER_PROJECT} tags.")
            if kind == NEGATIVE and any(t.type == NEGATIVE for t in existing):
                raise bad_request("BadRequestMultipleNegativeTag", "A project can have only one Negative tag.")
            if kind == GENERAL_PRODUCT and any(t.type == GENERAL_PRODUCT for t in existing):
                raise bad_request("BadRequestMultipleGeneralProductTag", "A project can have only one GeneralProduct tag.")
            ident = db.new_id()
            conn.execute(insert(db.tags).values(id=ident, project_id=project_id, name=name, description=description or "",
                                                type=kind, created=db.now()))
            self.touch(conn, project_id)
            return self.tag(conn, project_id, ident)

    def update_tag(self, project_id: str, tag_id: str, body: dict[str, Any]) -> Any:
        with self.engine.begin() as conn:
            row = self.tag(conn, project_id, tag_id)
            values: dict[str, Any] = {}
            if body.get("name") is not None:
                name = str(body["name"]).strip()
                if not name or len(name) > 256:
                    raise bad_request("BadRequestTagName", "A tag needs a name of 1 to 256 characters.")
                if any(t.name.lower() == name.lower() and t.id != tag_id for t in self.tags(conn, project_id)):
                    raise bad_request("BadRequestTagNameNotUnique", f"The project has a tag named {name!r} already.")
                values["name"] = name
            if body.get("description") is not None:
                values["description"] = str(body["description"])
            if body.get("type") is not None and str(body["type"]).lower() != row.type.lower():
                kind = next((k for k in (REGULAR, NEGATIVE, GENERAL_PRODUCT) if k.lower() == str(body["type"]).lower()), None)
                if kind is None:
                    raise bad_request("BadRequestTagType", "A tag's type is Regular, Negative or GeneralProduct.")
                if kind == NEGATIVE and any(t.type == NEGATIVE for t in self.tags(conn, project_id)):
                    raise bad_request("BadRequestMultipleNegativeTag", "A project can have only one Negative tag.")
                values["type"] = kind
            if values:
                conn.execute(update(db.tags).where(db.tags.c.id == tag_id).values(**values))
                self.touch(conn, project_id)
            return self.tag(conn, project_id, tag_id)

    def delete_tag(self, project_id: str, tag_id: str) -> None:
        with self.engine.begin() as conn:
            self.tag(conn, project_id, tag_id)
            conn.execute(delete(db.tags).where(db.tags.c.id == tag_id))
            self.touch(conn, project_id)

    # ------------------------------------------------------------------ images
    def _check_labels(self, project: Any, known: dict[str, Any], tag_ids: Iterable[str],
                      regions: Sequence[dict[str, Any]]) -> Optional[str]:
        """The per-item error status for these tags and regions on one image, or None.

        ``known`` (tag id -> row) is read once by the caller for a whole batch, not once per image.
        """
        wanted = set(tag_ids) | {r.get("tagId") for r in regions}
        if any(t not in known for t in wanted):
            return "ErrorInvalidTag"
        if len(wanted) > MAX_TAGS_PER_IMAGE:
            return "ErrorTagLimitExceed"
        if len(regions) > MAX_REGIONS_PER_IMAGE:
            return "ErrorRegionLimitExceed"
        kinds = {known[t].type for t in wanted}
        if NEGATIVE in kinds and len(kinds) > 1:
            return "ErrorNegativeAndRegularTagOnSameImage"
        if regions and not self.is_detection(project):
            return "ErrorInvalidTag"
        for r in regions:
            try:
                left, top, width, height = (float(r[k]) for k in ("left", "top", "width", "height"))
            except (KeyError, TypeError, ValueError):
                return "ErrorInvalidTag"
            if not (0 <= left <= 1 and 0 <= top <= 1 and width > 0 and height > 0
                    and left + width <= 1.0001 and top + height <= 1.0001):
                return "ErrorInvalidTag"
        return None

    def add_images(self, project_id: str, uploads: Sequence[Upload], batch_tags: Sequence[str] = (),
                   metadata: Optional[dict[str, str]] = None) -> tuple[bool, list[dict[str, Any]]]:
        """(every image OK, per-image results): the ImageCreateSummary of the API."""
        if len(uploads) > MAX_BATCH:
            raise bad_request("BadRequestImageBatch", f"A batch may hold at most {MAX_BATCH} images; it has {len(uploads)}.")
        if not uploads:
            raise bad_request("BadRequestImageBatch", "The batch holds no images.")
        metadata = check_metadata(metadata or {})
        with self.engine.connect() as conn:
            project = self.project(conn, project_id)
            known = {t.id: t for t in self.tags(conn, project_id)}
        results = []
        for upload in uploads:
            results.append(self._add_one(project, known, upload, list(batch_tags), metadata))
        return all(r["status"] == "OK" for r in results), results

    def _add_one(self, project: Any, known: dict[str, Any], upload: Upload, batch_tags: list[str],
                 metadata: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = {"sourceUrl": upload.source_url, "status": "OK", "image": None}
        if isinstance(upload.image, Refusal):
            result["status"] = upload.image.status
            result["message"] = upload.image.message
            return result
        image = upload.image
        tag_ids = list(dict.fromkeys(batch_tags + list(upload.tag_ids)))
        problem = self._check_labels(project, known, tag_ids, upload.regions)
        if problem:
            result["status"] = problem
            return result
        with self.engine.begin() as conn:
            count = conn.execute(select(func.count()).select_from(db.images).where(db.images.c.project_id == project.id)).scalar()
            if count >= MAX_IMAGES_PER_PROJECT:
                result["status"] = "ErrorLimitExceed"
                return result
        sha = self.store.put(image.data, image.extension)  # the bytes exist before any row names them
        ident, stamp = db.new_id(), db.now()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(db.images).values(id=ident, project_id=project.id, sha256=sha, format=image.extension,
                                                      width=image.width, height=image.height, created=stamp,
                                                      metadata=metadata))
                self._insert_labels(conn, ident, tag_ids, upload.regions, stamp)
                self.touch(conn, project.id)
        except IntegrityError:
            # Either the same content is in the project already (perhaps uploaded a moment ago by a
            # concurrent request: the hosted service answers OKDuplicate with the existing image), or
            # a tag this image names was deleted after the batch read the tags (the foreign key
            # refused the row). The transaction rolled back either way: nothing half-written.
            with self.engine.connect() as conn:
                existing = conn.execute(select(db.images.c.id).where(and_(db.images.c.project_id == project.id,
                                                                           db.images.c.sha256 == sha))).scalar()
            if existing is None:
                result["status"] = "ErrorInvalidTag"
                result["message"] = "A tag of this image was deleted while the image was being added; it was not added."
                return result
            result["status"] = "OKDuplicate"
            ident = existing
        result["image_id"] = ident
        return result

    def _insert_labels(self, conn: Connection, image_id: str, tag_ids: Iterable[str], regions: Iterable[dict[str, Any]],
                       stamp: str) -> None:
        tagged = set()
        for r in regions:
            conn.execute(insert(db.regions).values(id=db.new_id(), image_id=image_id, tag_id=r["tagId"], left=float(r["left"]),
                                                   top=float(r["top"]), width=float(r["width"]), height=float(r["height"]),
                                                   created=stamp))
            tagged.add(r["tagId"])
        for tag_id in set(tag_ids) | tagged:
            db.insert_unless_present(conn, db.image_tags, image_id=image_id, tag_id=tag_id, created=stamp)

    def image_rows(self, conn: Connection, project_id: str, *, ids: Optional[Sequence[str]] = None,
                   tagging: str = "All", tag_ids: Sequence[str] = (), order: str = "Newest",
                   take: Optional[int] = None, skip: int = 0) -> list[Any]:
        query = select(db.images).where(db.images.c.project_id == project_id)
        if ids is not None:
            query = query.where(db.images.c.id.in_(list(ids)))
        tagged = select(db.image_tags.c.image_id)
        if tag_ids:
            query = query.where(db.images.c.id.in_(tagged.where(db.image_tags.c.tag_id.in_(list(tag_ids)))))
        if tagging.lower() == "tagged":
            query = query.where(db.images.c.id.in_(tagged))
        elif tagging.lower() == "untagged":
            query = query.where(db.images.c.id.not_in(tagged))
        descending = order.lower() != "oldest"
        query = query.order_by(db.images.c.created.desc() if descending else db.images.c.created, db.images.c.id)
        if take is not None:
            query = query.limit(take).offset(skip)
        return list(conn.execute(query))

    def count_images(self, project_id: str, tagging: str = "All", tag_ids: Sequence[str] = ()) -> int:
        with self.engine.connect() as conn:
            self.project(conn, project_id)
            return len(self.image_rows(conn, project_id, tagging=tagging, tag_ids=tag_ids))

    def labels_of(self, conn: Connection, image_ids: Sequence[str]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """(image -> tag rows with names, image -> region rows with names) for many images at once."""
        tags_by: dict[str, list[Any]] = {i: [] for i in image_ids}
        regions_by: dict[str, list[Any]] = {i: [] for i in image_ids}
        if not image_ids:
            return tags_by, regions_by
        ids = list(image_ids)
        rows = conn.execute(select(db.image_tags.c.image_id, db.image_tags.c.tag_id, db.image_tags.c.created, db.tags.c.name)
                            .join(db.tags, db.tags.c.id == db.image_tags.c.tag_id).where(db.image_tags.c.image_id.in_(ids)))
        for row in rows:
            tags_by[row.image_id].append(row)
        rows = conn.execute(select(db.regions, db.tags.c.name.label("tag_name"))
                            .join(db.tags, db.tags.c.id == db.regions.c.tag_id).where(db.regions.c.image_id.in_(ids)))
        for row in rows:
            regions_by[row.image_id].append(row)
        return tags_by, regions_by

    def delete_images(self, project_id: str, image_ids: Optional[Sequence[str]], all_images: bool = False) -> int:
        with self.engine.begin() as conn:
            self.project(conn, project_id)
            query = delete(db.images).where(db.images.c.project_id == project_id)
            if not all_images:
                if not image_ids:
                    raise bad_request("BadRequestInvalidIds", "Give imageIds, or allImages=true.")
                query = query.where(db.images.c.id.in_(list(image_ids)))
            removed = conn.execute(query).rowcount
            self.touch(conn, project_id)
        return removed

    def _images_of_project(self, conn: Connection, project_id: str, image_ids: Iterable[str]) -> dict[str, Any]:
        ids = list(set(image_ids))
        rows = {r.id: r for r in conn.execute(select(db.images).where(and_(db.images.c.project_id == project_id,
                                                                          db.images.c.id.in_(ids))))}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise not_found("Image", missing[0])
        return rows

    def add_image_tags(self, project_id: str, pairs: Sequence[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
        if len(pairs) > MAX_BATCH:
            raise bad_request("BadRequestExceededBatchSize", f"At most {MAX_BATCH} image tags per request.")
        summary: dict[str, list[dict[str, str]]] = {"created": [], "duplicated": [], "exceeded": []}
        with self.engine.begin() as conn:
            project = self.project(conn, project_id)
            self._images_of_project(conn, project_id, (p["imageId"] for p in pairs))
            known = {t.id: t for t in self.tags(conn, project_id)}
            stamp = db.now()
            for pair in pairs:
                image_id, tag_id = pair["imageId"], pair["tagId"]
                if tag_id not in known:
                    raise not_found("Tag", tag_id)
                current = {r.tag_id for r in conn.execute(select(db.image_tags.c.tag_id).where(db.image_tags.c.image_id == image_id))}
                entry = {"imageId": image_id, "tagId": tag_id}
                if tag_id in current:
                    summary["duplicated"].append(entry)
                    continue
                if len(current) >= MAX_TAGS_PER_IMAGE:
                    summary["exceeded"].append(entry)
                    continue
                kinds = {known[t].type for t in current | {tag_id}}
                if NEGATIVE in kinds and len(kinds) > 1:
                    raise bad_request("BadRequestNegativeAndRegularTagOnSameImage",
                                      "The Negative tag and a regular tag cannot be on the same image.")
                conn.execute(insert(db.image_tags).values(image_id=image_id, tag_id=tag_id, created=stamp))
                summary["created"].append(entry)
            self.touch(conn, project.id)
        return summary

    def delete_image_tags(self, project_id: str, image_ids: Sequence[str], tag_ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            self._images_of_project(conn, project_id, image_ids)
            conn.execute(delete(db.image_tags).where(and_(db.image_tags.c.image_id.in_(list(image_ids)),
                                                          db.image_tags.c.tag_id.in_(list(tag_ids)))))
            conn.execute(delete(db.regions).where(and_(db.regions.c.image_id.in_(list(image_ids)),
                                                       db.regions.c.tag_id.in_(list(tag_ids)))))
            self.touch(conn, project_id)

    def add_regions(self, project_id: str, entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        if len(entries) > MAX_BATCH:
            raise bad_request("BadRequestExceededBatchSize", f"At most {MAX_BATCH} regions per request.")
        summary: dict[str, list[dict[str, Any]]] = {"created": [], "duplicated": [], "exceeded": []}
        with self.engine.begin() as conn:
            project = self.project(conn, project_id)
            if not self.is_detection(project):
                raise bad_request("BadRequestImageRegions", "Regions belong to object detection projects.")
            self._images_of_project(conn, project_id, (e["imageId"] for e in entries))
            known = {t.id: t for t in self.tags(conn, project_id)}
            stamp = db.now()
            for entry in entries:
                if entry.get("tagId") not in known:
                    raise not_found("Tag", entry.get("tagId"))
                problem = self._check_labels(project, known, [], [entry])
                if problem:
                    raise bad_request("BadRequestImageRegions", f"Region {entry} is not a valid normalized rectangle.")
                existing = list(conn.execute(select(db.regions).where(db.regions.c.image_id == entry["imageId"])))
                box = tuple(round(float(entry[k]), 6) for k in ("left", "top", "width", "height"))
                if any(r.tag_id == entry["tagId"] and (round(r.left, 6), round(r.top, 6), round(r.width, 6), round(r.height, 6)) == box
                       for r in existing):
                    summary["duplicated"].append(dict(entry))
                    continue
                if len(existing) >= MAX_REGIONS_PER_IMAGE:
                    summary["exceeded"].append(dict(entry))
                    continue
                region_id = db.new_id()
                conn.execute(insert(db.regions).values(id=region_id, image_id=entry["imageId"], tag_id=entry["tagId"],
                                                       left=box[0], top=box[1], width=box[2], height=box[3], created=stamp))
                db.insert_unless_present(conn, db.image_tags, image_id=entry["imageId"], tag_id=entry["tagId"], created=stamp)
                summary["created"].append({"imageId": entry["imageId"], "regionId": region_id, "tagName": known[entry["tagId"]].name,
                                           "created": stamp, "tagId": entry["tagId"], "left": box[0], "top": box[1],
                                           "width": box[2], "height": box[3]})
            self.touch(conn, project.id)
        return summary

    def delete_regions(self, project_id: str, region_ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            self.project(conn, project_id)
            rows = list(conn.execute(select(db.regions).join(db.images, db.images.c.id == db.regions.c.image_id)
                                     .where(and_(db.images.c.project_id == project_id, db.regions.c.id.in_(list(region_ids))))))
            if len(rows) != len(set(region_ids)):
                raise not_found("Image", "region " + ",".join(sorted(set(region_ids) - {r.id for r in rows})))
            conn.execute(delete(db.regions).where(db.regions.c.id.in_([r.id for r in rows])))
            for row in rows:  # a tag stays on the image only while a box of it remains
                left = conn.execute(select(func.count()).select_from(db.regions).where(
                    and_(db.regions.c.image_id == row.image_id, db.regions.c.tag_id == row.tag_id))).scalar()
                if not left:
                    conn.execute(delete(db.image_tags).where(and_(db.image_tags.c.image_id == row.image_id,
                                                                  db.image_tags.c.tag_id == row.tag_id)))
            self.touch(conn, project_id)

    def update_metadata(self, project_id: str, image_ids: Sequence[str], metadata: dict[str, str]) -> list[dict[str, Any]]:
        metadata = check_metadata(metadata)
        results = []
        with self.engine.begin() as conn:
            rows = self._images_of_project(conn, project_id, image_ids)
            for image_id in image_ids:
                merged = {**(rows[image_id].metadata or {}), **metadata}
                if len(merged) > MAX_METADATA:
                    results.append({"imageId": image_id, "status": "ErrorLimitExceed", "metadata": rows[image_id].metadata})
                    continue
                conn.execute(update(db.images).where(db.images.c.id == image_id).values(metadata=merged))
                results.append({"imageId": image_id, "status": "OK", "metadata": merged})
        return results


def check_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA:
        raise bad_request("BadRequestImageMetadataKey", f"An image may carry at most {MAX_METADATA} metadata pairs.")
    for key, value in metadata.items():
        if not key or len(key) > 128:
            raise bad_request("BadRequestImageMetadataKey", "Metadata keys are 1 to 128 characters.")
        if value is None or len(str(value)) > 256:
            raise bad_request("BadRequestImageMetadataValue", "Metadata values are at most 256 characters.")
    return {str(k): str(v) for k, v in metadata.items()}
