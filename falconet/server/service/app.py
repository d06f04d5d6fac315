"""The training service's FastAPI app: the Training API v3.0-v3.4 and the Prediction API.

Any ``/customvision/v3.x[-preview]/training`` prefix, in any letter case, reaches the same
routes (the SDK sends ``v3.4-preview/training``), as does ``/customvision/v3.0|v3.1/prediction``.
Keys are compared in constant time when configured. Storage, training and exports live in the
modules beside this one; this file only maps HTTP onto them.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from falconet.core.errors import FalconetError
from falconet.server import inputs
from falconet.server.errors import UnauthorizedError, install_handlers
from falconet.server.service import db
from falconet.server.service.catalog import PLATFORMS, all_domains, domain_json, export_format, resolve_domain
from falconet.server.service.errors import bad_request, not_found
from falconet.server.service.ingest import CheckedImage, Refusal, check_image
from falconet.server.service.iterations import Iterations
from falconet.server.service.jobs import JobRunner
from falconet.server.service.links import BLOBS, EXPORTS, FileLinks, link_secret, signature_valid
from falconet.server.service.predicting import Predictors, StoredPredictions, uncertainty
from falconet.server.service.repository import Repository, Upload
from falconet.server.service.settings import ServiceSettings, open_storage
from falconet.server.service import views

TRAINING = "/customvision/v3.3/training"
PREDICTION = "/customvision/v3.1/prediction"
_TRAINING_RE = re.compile(r"^/customvision/v3\.[0-4](?:-preview)?/training(?=/|$)", re.IGNORECASE)
_PREDICTION_RE = re.compile(r"^/customvision/v3\.[0-1]/prediction(?=/|$)", re.IGNORECASE)


class CanonicalPrefix:
    """Rewrites every accepted API prefix (version and letter case) to the one the routes use."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            for pattern, canonical in ((_TRAINING_RE, TRAINING), (_PREDICTION_RE, PREDICTION)):
                if pattern.match(path):
                    scope = {**scope, "path": pattern.sub(canonical, path, count=1), "raw_path": None}
                    break
        await self.app(scope, receive, send)


def _ids(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _flag(text: Optional[str], default: bool = False) -> bool:
    return default if text is None else text.strip().lower() in ("1", "true", "yes")


async def _json(request: Request) -> Any:
    body = await request.body()
    if not body:
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_request("BadRequest", "The body is not valid JSON.") from None


def create_service_app(settings: ServiceSettings, log: Callable[[str], None] = print) -> FastAPI:
    import falconet
    from falconet.core.prediction import to_custom_vision_json
    from falconet.server import urlfetch

    engine, store = open_storage(settings.data_dir)
    store.remove_partial_writes()
    repo = Repository(engine, store, settings.data_dir)
    iterations = Iterations(repo)
    jobs = JobRunner(engine, iterations, settings, log)
    predictors = Predictors(iterations.package_dir)
    stored = StoredPredictions(engine, store)
    #: (iteration, image) -> smart-labeler suggestion (its links are added per request); an
    #: iteration's model never changes.
    suggestion_cache: dict[tuple[str, str], dict[str, Any]] = {}
    secret = link_secret(settings.training_key)

    def links_for(request: Request) -> FileLinks:
        return FileLinks(str(request.base_url).rstrip("/"), secret)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.http = urlfetch.new_client()
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()
            await app.state.http.aclose()

    app = FastAPI(title="Falconet training service", version=falconet.__version__, lifespan=lifespan,
                  description="Custom Vision compatible Training and Prediction APIs over Falconet.")
    app.state.repo, app.state.iterations, app.state.jobs, app.state.settings = repo, iterations, jobs, settings
    install_handlers(app)

    def check_key(request: Request, header: str, expected: Optional[str]) -> None:
        if expected is None:
            return
        given = request.headers.get(header)
        if given is None:
            raise UnauthorizedError(f"The {header} header is missing.")
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            raise UnauthorizedError(f"The {header} is not valid.")

    @app.middleware("http")
    async def keys(request: Request, call_next: Any) -> Response:
        path = request.url.path
        try:
            if path.startswith(TRAINING):
                check_key(request, "training-key", settings.training_key)
        except FalconetError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status,
                                headers={"WWW-Authenticate": 'ApiKey header="Training-Key"'})
        return await call_next(request)

    T = TRAINING

    # ------------------------------------------------------------------ domains
    @app.get(T + "/domains", tags=["domains"])
    async def get_domains() -> list[dict[str, Any]]:
        return [domain_json(d) for d in all_domains()]

    @app.get(T + "/domains/{domain_id}", tags=["domains"])
    async def get_domain(domain_id: str) -> dict[str, Any]:
        try:
            return domain_json(resolve_domain(domain_id))
        except FalconetError:
            raise not_found("Domain", domain_id) from None

    # ------------------------------------------------------------------ projects
    def projects_view(rows: list[Any], request: Request) -> list[dict[str, Any]]:
        thumbnails = repo.thumbnails([r.id for r in rows])
        return [views.project_json(r, links_for(request), thumbnails.get(r.id)) for r in rows]

    def project_view(row: Any, request: Request) -> dict[str, Any]:
        return projects_view([row], request)[0]

    @app.get(T + "/projects", tags=["projects"])
    async def get_projects(request: Request) -> list[dict[str, Any]]:
        return projects_view(repo.list_projects(), request)

    @app.post(T + "/projects", tags=["projects"])
    async def create_project(request: Request, name: str = "", description: str = "", domainId: Optional[str] = None,
                             classificationType: Optional[str] = None, targetExportPlatforms: Optional[str] = None) -> dict[str, Any]:
        await _json(request)  # CreateProjectOptions: storage URIs, which a self-hosted service has no use for
        row = repo.create_project(name, description, domainId, classificationType, _ids(targetExportPlatforms))
        return project_view(row, request)

    @app.get(T + "/projects/{project_id}", tags=["projects"])
    async def get_project(project_id: str, request: Request) -> dict[str, Any]:
        return project_view(repo.get_project(project_id), request)

    @app.patch(T + "/projects/{project_id}", tags=["projects"])
    async def update_project(project_id: str, request: Request) -> dict[str, Any]:
        return project_view(repo.update_project(project_id, await _json(request)), request)

    @app.delete(T + "/projects/{project_id}", tags=["projects"], status_code=204)
    async def delete_project(project_id: str) -> Response:
        for it in iterations.list(project_id):
            predictors.forget(it.id)
        repo.delete_project(project_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ tags
    @app.get(T + "/projects/{project_id}/tags", tags=["tags"])
    async def get_tags(project_id: str, iterationId: Optional[str] = None) -> list[dict[str, Any]]:
        if iterationId:
            row = iterations.get(project_id, iterationId)
            counts: dict[str, int] = {}
            for item in row.snapshot:
                for tag in set(item["tags"]) | {r[0] for r in item["regions"]}:
                    counts[tag] = counts.get(tag, 0) + 1
            return [{"id": t["id"], "name": t["name"], "description": "", "type": t["type"], "imageCount": counts.get(t["id"], 0)}
                    for t in row.tags]
        with engine.connect() as conn:
            repo.project(conn, project_id)
            counts = repo.tag_counts(conn, project_id)
            return [views.tag_json(t, counts.get(t.id, 0)) for t in repo.tags(conn, project_id)]

    @app.post(T + "/projects/{project_id}/tags", tags=["tags"])
    async def create_tag(project_id: str, name: str = "", description: str = "", type: Optional[str] = None) -> dict[str, Any]:
        return views.tag_json(repo.create_tag(project_id, name, description, type), 0)

    @app.get(T + "/projects/{project_id}/tags/{tag_id}", tags=["tags"])
    async def get_tag(project_id: str, tag_id: str) -> dict[str, Any]:
        with engine.connect() as conn:
            repo.project(conn, project_id)
            return views.tag_json(repo.tag(conn, project_id, tag_id), repo.tag_counts(conn, project_id).get(tag_id, 0))

    @app.patch(T + "/projects/{project_id}/tags/{tag_id}", tags=["tags"])
    async def update_tag(project_id: str, tag_id: str, request: Request) -> dict[str, Any]:
        row = repo.update_tag(project_id, tag_id, await _json(request))
        with engine.connect() as conn:
            return views.tag_json(row, repo.tag_counts(conn, project_id).get(tag_id, 0))

    @app.delete(T + "/projects/{project_id}/tags/{tag_id}", tags=["tags"], status_code=204)
    async def delete_tag(project_id: str, tag_id: str) -> Response:
        repo.delete_tag(project_id, tag_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ images: reading
    def images_view(project_id: str, request: Request, iteration_id: Optional[str], **filters: Any) -> list[dict[str, Any]]:
        links = links_for(request)
        if iteration_id:
            row = iterations.get(project_id, iteration_id)
            names = {t["id"]: t["name"] for t in row.tags}
            items = row.snapshot
            if filters.get("ids") is not None:
                items = [i for i in items if i["image"] in set(filters["ids"])]
            if filters.get("tag_ids"):
                wanted = set(filters["tag_ids"])
                items = [i for i in items if wanted & (set(i["tags"]) | {r[0] for r in i["regions"]})]
            skip, take = filters.get("skip", 0), filters.get("take")
            items = items[skip:skip + take] if take is not None else items
            return [views.snapshot_image_json(i, row.created, names, links) for i in items]
        with engine.connect() as conn:
            repo.project(conn, project_id)
            rows = repo.image_rows(conn, project_id, **filters)
            tags_by, regions_by = repo.labels_of(conn, [r.id for r in rows])
        return [views.image_json(r, tags_by[r.id], regions_by[r.id], links) for r in rows]

    def _take(take: Optional[int]) -> int:
        take = 50 if take is None else take
        if not 0 <= take <= 256:
            raise bad_request("BadRequestInvalid", "take must be between 0 and 256.")
        return take

    @app.get(T + "/projects/{project_id}/images", tags=["images"])
    async def get_images(project_id: str, request: Request, iterationId: Optional[str] = None, tagIds: Optional[str] = None,
                         taggingStatus: str = "All", orderBy: str = "Newest", take: Optional[int] = None, skip: int = 0) -> list[dict[str, Any]]:
        return images_view(project_id, request, iterationId, tagging=taggingStatus, tag_ids=_ids(tagIds), order=orderBy,
                           take=_take(take), skip=skip)

    @app.get(T + "/projects/{project_id}/images/count", tags=["images"])
    async def get_image_count(project_id: str, taggingStatus: str = "All", tagIds: Optional[str] = None) -> int:
        return repo.count_images(project_id, taggingStatus, _ids(tagIds))

    @app.get(T + "/projects/{project_id}/images/tagged", tags=["images"])
    async def get_tagged(project_id: str, request: Request, iterationId: Optional[str] = None, tagIds: Optional[str] = None,
                         orderBy: str = "Newest", take: Optional[int] = None, skip: int = 0) -> list[dict[str, Any]]:
        return images_view(project_id, request, iterationId, tagging="Tagged", tag_ids=_ids(tagIds), order=orderBy,
                           take=_take(take), skip=skip)

    @app.get(T + "/projects/{project_id}/images/tagged/count", tags=["images"])
    async def get_tagged_count(project_id: str, tagIds: Optional[str] = None) -> int:
        return repo.count_images(project_id, "Tagged", _ids(tagIds))

    @app.get(T + "/projects/{project_id}/images/untagged", tags=["images"])
    async def get_untagged(project_id: str, request: Request, orderBy: str = "Newest", take: Optional[int] = None,
                           skip: int = 0) -> list[dict[str, Any]]:
        return images_view(project_id, request, None, tagging="Untagged", order=orderBy, take=_take(take), skip=skip)

    @app.get(T + "/projects/{project_id}/images/untagged/count", tags=["images"])
    async def get_untagged_count(project_id: str) -> int:
        return repo.count_images(project_id, "Untagged")

    @app.get(T + "/projects/{project_id}/images/id", tags=["images"])
    async def get_images_by_ids(project_id: str, request: Request, imageIds: Optional[str] = None,
                                iterationId: Optional[str] = None) -> list[dict[str, Any]]:
        ids = _ids(imageIds)
        if len(ids) > 256:
            raise bad_request("BadRequestExceededBatchSize", "At most 256 image ids per request.")
        return images_view(project_id, request, iterationId, ids=ids)

    # ------------------------------------------------------------------ images: writing
    def summary(ok: bool, results: list[dict[str, Any]], request: Request, project_id: str) -> JSONResponse:
        ids = [r["image_id"] for r in results if r.get("image_id")]
        by_id = {i["id"]: i for i in images_view(project_id, request, None, ids=ids)} if ids else {}
        # "message" is Falconet's own beside the API's fields: why an image was refused, in words.
        images = [{"sourceUrl": r["sourceUrl"], "status": r["status"], "image": by_id.get(r.get("image_id")),
                   **({"message": r["message"]} if r.get("message") else {})} for r in results]
        return JSONResponse({"isBatchSuccessful": ok, "images": images}, status_code=200 if ok else 207)

    def limit() -> int:
        return settings.max_training_bytes

    def _regions(entry: dict[str, Any]) -> list[dict[str, Any]]:
        regions = entry.get("regions") or []
        if not isinstance(regions, list):
            raise bad_request("BadRequestImageRegions", "regions must be a list.")
        return regions

    @app.post(T + "/projects/{project_id}/images", tags=["images"])
    async def create_images_from_data(project_id: str, request: Request, tagIds: Optional[str] = None) -> JSONResponse:
        kind = inputs.media_type(request)
        batch_limit = 64 * limit() + inputs.MULTIPART_OVERHEAD * 64
        if kind == "multipart/form-data":
            blobs = _multipart_files(request, await inputs.read_body(request, batch_limit))
        elif kind in inputs.RAW_TYPES or kind.startswith("image/"):
            blobs = [await inputs.read_body(request, limit() * 4)]
        else:
            raise bad_request("UnsupportedMediaType", "Send images as multipart/form-data or application/octet-stream.")
        uploads = [Upload(check_image(b, limit())) for b in blobs]
        ok, results = await run_in_threadpool(repo.add_images, project_id, uploads, _ids(tagIds))
        return summary(ok, results, request, project_id)

    async def add_entries(project_id: str, request: Request, batch: dict[str, Any],
                          image_of: Callable[[dict[str, Any]], Awaitable[CheckedImage | Refusal]],
                          source_of: Callable[[dict[str, Any]], Optional[str]] = lambda entry: None) -> JSONResponse:
        """The JSON batches differ only in where an entry's bytes come from; labels, batch tags,
        metadata and the summary are the same for all of them."""
        uploads = [Upload(await image_of(entry), entry.get("tagIds") or [], _regions(entry), source_of(entry))
                   for entry in batch.get("images") or []]
        ok, results = await run_in_threadpool(repo.add_images, project_id, uploads, batch.get("tagIds") or [],
                                              batch.get("metadata"))
        return summary(ok, results, request, project_id)

    @app.post(T + "/projects/{project_id}/images/files", tags=["images"])
    async def create_images_from_files(project_id: str, request: Request) -> JSONResponse:
        async def decoded(entry: dict[str, Any]) -> CheckedImage | Refusal:
            try:
                data = base64.b64decode(entry.get("contents") or "", validate=True)
            except (binascii.Error, ValueError):
                data = b""
            return check_image(data, limit())

        return await add_entries(project_id, request, await _json(request), decoded, lambda entry: entry.get("name"))

    @app.post(T + "/projects/{project_id}/images/urls", tags=["images"])
    async def create_images_from_urls(project_id: str, request: Request) -> JSONResponse:
        batch = await _json(request)
        entries = batch.get("images") or []
        if len(entries) > 64:
            raise bad_request("BadRequestImageBatch", f"A batch may hold at most 64 images; it has {len(entries)}.")

        async def fetched(entry: dict[str, Any]) -> CheckedImage | Refusal:
            try:
                data = await urlfetch.fetch_image(request.app.state.http, entry.get("url") or "", settings.url_policy)
                return check_image(data, limit())
            except FalconetError as exc:
                return Refusal("ErrorSource", exc.message)

        return await add_entries(project_id, request, batch, fetched, lambda entry: entry.get("url") or "")

    @app.post(T + "/projects/{project_id}/images/predictions", tags=["images"])
    async def create_images_from_predictions(project_id: str, request: Request) -> JSONResponse:
        batch = await _json(request)
        found = stored.get_many(project_id, [e.get("id") for e in batch.get("images") or [] if e.get("id")])

        async def kept(entry: dict[str, Any]) -> CheckedImage | Refusal:
            row = found.get(entry.get("id"))
            if row is None:
                return Refusal("ErrorImageNotFound", f"No stored prediction {entry.get('id')}.")
            return check_image(store.read(row.sha256, row.format), limit())

        return await add_entries(project_id, request, batch, kept)

    @app.delete(T + "/projects/{project_id}/images", tags=["images"], status_code=204)
    async def delete_images(project_id: str, imageIds: Optional[str] = None, allImages: Optional[str] = None,
                            allIterations: Optional[str] = None) -> Response:
        ids = _ids(imageIds)
        if len(ids) > 256:
            raise bad_request("BadRequestExceededBatchSize", "At most 256 image ids per request.")
        repo.delete_images(project_id, ids, _flag(allImages))
        return Response(status_code=204)

    @app.post(T + "/projects/{project_id}/images/metadata", tags=["images"])
    async def update_image_metadata(project_id: str, request: Request, imageIds: Optional[str] = None) -> JSONResponse:
        results = repo.update_metadata(project_id, _ids(imageIds), await _json(request))
        ok = all(r["status"] == "OK" for r in results)
        return JSONResponse({"isBatchSuccessful": ok, "images": results}, status_code=200 if ok else 207)

    @app.post(T + "/projects/{project_id}/images/tags", tags=["images"])
    async def create_image_tags(project_id: str, request: Request) -> dict[str, Any]:
        return repo.add_image_tags(project_id, (await _json(request)).get("tags") or [])

    @app.delete(T + "/projects/{project_id}/images/tags", tags=["images"], status_code=204)
    async def delete_image_tags(project_id: str, imageIds: Optional[str] = None, tagIds: Optional[str] = None) -> Response:
        repo.delete_image_tags(project_id, _ids(imageIds), _ids(tagIds))
        return Response(status_code=204)

    @app.post(T + "/projects/{project_id}/images/regions", tags=["images"])
    async def create_image_regions(project_id: str, request: Request) -> JSONResponse:
        result = repo.add_regions(project_id, (await _json(request)).get("regions") or [])
        return JSONResponse(result, status_code=200 if not result["duplicated"] and not result["exceeded"] else 207)

    @app.delete(T + "/projects/{project_id}/images/regions", tags=["images"], status_code=204)
    async def delete_image_regions(project_id: str, regionIds: Optional[str] = None) -> Response:
        repo.delete_regions(project_id, _ids(regionIds))
        return Response(status_code=204)

    # ------------------------------------------------------------------ training and iterations
    @app.post(T + "/projects/{project_id}/train", tags=["iterations"])
    async def train_project(project_id: str, request: Request, trainingType: str = "Regular", reservedBudgetInHours: int = 0,
                            forceTrain: Optional[str] = None, notificationEmailAddress: Optional[str] = None) -> dict[str, Any]:
        body = await _json(request)
        row = iterations.start(project_id, trainingType, reservedBudgetInHours, _flag(forceTrain),
                               (body or {}).get("selectedTags") or [], settings.quick_budget_s)
        jobs.wake()
        return views.iteration_json(row)

    @app.get(T + "/projects/{project_id}/iterations", tags=["iterations"])
    async def get_iterations(project_id: str) -> list[dict[str, Any]]:
        return [views.iteration_json(r) for r in iterations.list(project_id)]

    @app.get(T + "/projects/{project_id}/iterations/{iteration_id}", tags=["iterations"])
    async def get_iteration(project_id: str, iteration_id: str) -> dict[str, Any]:
        return views.iteration_json(iterations.get(project_id, iteration_id))

    @app.patch(T + "/projects/{project_id}/iterations/{iteration_id}", tags=["iterations"])
    async def update_iteration(project_id: str, iteration_id: str, request: Request) -> dict[str, Any]:
        return views.iteration_json(iterations.rename(project_id, iteration_id, await _json(request)))

    @app.delete(T + "/projects/{project_id}/iterations/{iteration_id}", tags=["iterations"], status_code=204)
    async def delete_iteration(project_id: str, iteration_id: str) -> Response:
        iterations.delete(project_id, iteration_id)
        predictors.forget(iteration_id)
        return Response(status_code=204)

    @app.get(T + "/projects/{project_id}/iterations/{iteration_id}/performance", tags=["iterations"])
    async def get_iteration_performance(project_id: str, iteration_id: str, threshold: float = 0.5,
                                        overlapThreshold: float = 0.3) -> dict[str, Any]:
        from falconet.server.service.performance import iteration_performance

        row = iterations.completed(project_id, iteration_id)
        return await run_in_threadpool(iteration_performance, row, iterations.package_dir(project_id, iteration_id),
                                       threshold, overlapThreshold)

    @app.get(T + "/projects/{project_id}/iterations/{iteration_id}/performance/images", tags=["iterations"])
    async def get_image_performances(project_id: str, iteration_id: str, request: Request, tagIds: Optional[str] = None,
                                     orderBy: str = "Newest", take: Optional[int] = None, skip: int = 0) -> list[dict[str, Any]]:
        from falconet.server.service.performance import image_performances

        row = iterations.completed(project_id, iteration_id)
        found = image_performances(row, iterations.package_dir(project_id, iteration_id), links_for(request), _ids(tagIds))
        if orderBy.lower() == "oldest":
            found.reverse()
        return found[skip:skip + _take(take)]

    @app.get(T + "/projects/{project_id}/iterations/{iteration_id}/performance/images/count", tags=["iterations"])
    async def get_image_performance_count(project_id: str, iteration_id: str, request: Request,
                                          tagIds: Optional[str] = None) -> int:
        from falconet.server.service.performance import image_performances

        row = iterations.completed(project_id, iteration_id)
        return len(image_performances(row, iterations.package_dir(project_id, iteration_id), links_for(request), _ids(tagIds)))

    @app.post(T + "/projects/{project_id}/iterations/{iteration_id}/publish", tags=["iterations"])
    async def publish_iteration(project_id: str, iteration_id: str, publishName: str = "", predictionId: str = "",
                                overwrite: Optional[str] = None) -> bool:
        iterations.publish(project_id, iteration_id, publishName, predictionId, _flag(overwrite))
        return True

    @app.delete(T + "/projects/{project_id}/iterations/{iteration_id}/publish", tags=["iterations"], status_code=204)
    async def unpublish_iteration(project_id: str, iteration_id: str) -> Response:
        iterations.unpublish(project_id, iteration_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ exports
    def export_rows(iteration_id: str) -> list[Any]:
        from sqlalchemy import select

        with engine.connect() as conn:
            return list(conn.execute(select(db.exports).where(db.exports.c.iteration_id == iteration_id)
                                     .order_by(db.exports.c.created)))

    @app.get(T + "/projects/{project_id}/iterations/{iteration_id}/export", tags=["exports"])
    async def get_exports(project_id: str, iteration_id: str, request: Request) -> list[dict[str, Any]]:
        iterations.get(project_id, iteration_id)
        return [views.export_json(r, links_for(request)) for r in export_rows(iteration_id)]

    @app.post(T + "/projects/{project_id}/iterations/{iteration_id}/export", tags=["exports"])
    async def export_iteration(project_id: str, iteration_id: str, request: Request, platform: str = "",
                               flavor: Optional[str] = None) -> dict[str, Any]:
        from sqlalchemy import delete, insert

        row = iterations.completed(project_id, iteration_id)
        if not resolve_domain(row.domain_id).compact:
            raise bad_request("BadRequestNotSupported", "Only iterations trained on a compact domain can be exported.")
        export_format(platform, flavor)
        canonical = next(p for p in PLATFORMS if p.lower() == platform.lower())
        existing = next((r for r in export_rows(iteration_id) if r.platform == canonical and r.flavor == (flavor or "")), None)
        if existing is not None and existing.status in ("Queued", "Exporting"):
            raise bad_request("BadRequestExportAlreadyInProgress", f"A {canonical} export of this iteration is running.")
        if existing is not None and existing.status == "Done":
            return views.export_json(existing, links_for(request))
        with engine.begin() as conn:
            if existing is not None:
                conn.execute(delete(db.exports).where((db.exports.c.iteration_id == iteration_id)
                                                      & (db.exports.c.platform == canonical)
                                                      & (db.exports.c.flavor == (flavor or ""))))
            conn.execute(insert(db.exports).values(iteration_id=iteration_id, platform=canonical, flavor=flavor or "",
                                                   status="Queued", created=db.now()))
        jobs.wake()
        return views.export_json(next(r for r in export_rows(iteration_id) if r.platform == canonical
                                      and r.flavor == (flavor or "")), links_for(request))

    def check_signature(path: str, sig: Optional[str]) -> None:
        # checked before the file is looked up, so a bad link says nothing about what exists
        if not signature_valid(secret, path, sig):
            raise FalconetError("This file link's signature is missing or not valid (links change with the training "
                                "key); ask the Training API for the link again.", code="UnauthorizedLinkSignature", status=403)

    @app.get(EXPORTS + "/{iteration_id}/{name}", tags=["files"], include_in_schema=False)
    async def download_export(iteration_id: str, name: str, sig: Optional[str] = None) -> FileResponse:
        check_signature(f"{EXPORTS}/{iteration_id}/{name}", sig)
        for row in export_rows(iteration_id):
            label = f"{row.platform}-{row.flavor}.zip" if row.flavor else f"{row.platform}.zip"
            if label == name and row.status == "Done" and row.file and Path(row.file).is_file():
                return FileResponse(row.file, media_type="application/zip", filename=name)
        raise not_found("Iteration", f"{iteration_id} export {name}")

    # ------------------------------------------------------------------ quick test and predictions
    async def score(row: Any, data: bytes, store_it: bool, application: Optional[str] = None) -> dict[str, Any]:
        from falconet.core.images import image_format, load_image

        # The one decode of the request: its upright pixels are what the model scores and its size
        # is what a stored prediction records; the predictor is handed them rather than the bytes.
        image = load_image(data)
        predictions = await run_in_threadpool(predictors.predict, row, image)
        body = to_custom_vision_json(predictions, project=row.project_id, iteration=row.id)
        if store_it:
            fmt = image_format(data) or "JPEG"  # the header alone: no pixels are decoded again
            body["id"] = stored.save(row.project_id, row.id, data, image.width, image.height, fmt,
                                     body["predictions"], application)
        return body

    @app.post(T + "/projects/{project_id}/quicktest/image", tags=["quick test"])
    async def quick_test_image(project_id: str, request: Request, iterationId: Optional[str] = None,
                               store: Optional[str] = None) -> dict[str, Any]:
        data = await inputs.image_bytes(request, settings.max_prediction_bytes)
        return await score(iterations.completed(project_id, iterationId), data, _flag(store, True))

    @app.post(T + "/projects/{project_id}/quicktest/url", tags=["quick test"])
    async def quick_test_url(project_id: str, request: Request, iterationId: Optional[str] = None,
                             store: Optional[str] = None) -> dict[str, Any]:
        url = await inputs.image_url(request)
        row = iterations.completed(project_id, iterationId)
        data = await urlfetch.fetch_image(request.app.state.http, url, settings.url_policy)
        return await score(row, data, _flag(store, True))

    def stored_json(row: Any, links: FileLinks) -> dict[str, Any]:
        return {**links.image(row.sha256, row.format), "domain": None, "id": row.id, "project": row.project_id,
                "iteration": row.iteration_id, "created": row.created, "predictions": row.results}

    @app.post(T + "/projects/{project_id}/predictions/query", tags=["predictions"])
    async def query_predictions(project_id: str, request: Request) -> dict[str, Any]:
        token = await _json(request)
        repo.get_project(project_id)
        rows, continuation = stored.query(project_id, token or {})
        return {"token": {**(token or {}), "continuation": continuation},
                "results": [stored_json(r, links_for(request)) for r in rows]}

    @app.delete(T + "/projects/{project_id}/predictions", tags=["predictions"], status_code=204)
    async def delete_predictions(project_id: str, ids: Optional[str] = None) -> Response:
        chosen = _ids(ids)
        if not chosen:
            raise bad_request("BadRequestPredictionIdsMissing", "Give the ids of the predictions to delete.")
        if len(chosen) > 64:
            raise bad_request("BadRequestPredictionIdsExceededCount", "At most 64 prediction ids per request.")
        stored.delete(project_id, chosen)
        return Response(status_code=204)

    @app.post(T + "/projects/{project_id}/tagsandregions/suggestions", tags=["smart labeler"])
    async def suggest_tags_and_regions(project_id: str, iterationId: Optional[str] = None,
                                       imageIds: Optional[str] = None) -> list[dict[str, Any]]:
        ids = _ids(imageIds)
        if not ids or len(ids) > 64:
            raise bad_request("BadRequestExceededBatchSize", "Give 1 to 64 imageIds.")
        row = iterations.completed(project_id, iterationId)
        with engine.connect() as conn:
            images = repo.image_rows(conn, project_id, ids=ids)
        if len(images) != len(set(ids)):
            raise not_found("Image", next(i for i in ids if i not in {r.id for r in images}))
        out = []
        for image in images:
            predictions = await run_in_threadpool(predictors.predict, row, store.read(image.sha256, image.format))
            body = to_custom_vision_json(predictions, project=project_id, iteration=row.id)
            out.append({"id": image.id, "project": project_id, "iteration": row.id, "created": body["created"],
                        "predictions": body["predictions"], "predictionUncertainty": uncertainty(body["predictions"])})
        out.sort(key=lambda s: -s["predictionUncertainty"])
        return out

    @app.post(T + "/projects/{project_id}/images/{image_id}/regionproposals", tags=["smart labeler"])
    async def get_image_region_proposals(project_id: str, image_id: str) -> dict[str, Any]:
        """Proposals from the newest trained detector of the project; none before the first training."""
        from falconet.server.service.predicting import region_proposals

        with engine.connect() as conn:
            project = repo.project(conn, project_id)
            found = repo.image_rows(conn, project_id, ids=[image_id])
        if not found:
            raise not_found("Image", image_id)
        if not repo.is_detection(project):
            raise bad_request("BadRequestNotSupported", "Region proposals are for object detection projects.")
        done = [i for i in iterations.list(project_id) if i.status == "Completed"]
        proposals: list[dict[str, Any]] = []
        if done:
            predictor = predictors.get(done[-1])
            data = store.read(found[0].sha256, found[0].format)
            proposals = await run_in_threadpool(region_proposals, predictor, data)
        return {"projectId": project_id, "imageId": image_id, "proposals": proposals}

    async def suggestions_for_untagged(project_id: str, iteration_id: Optional[str],
                                       links: FileLinks) -> tuple[Any, list[dict[str, Any]]]:
        row = iterations.completed(project_id, iteration_id)
        with engine.connect() as conn:
            images = repo.image_rows(conn, project_id, tagging="Untagged", order="Newest")
        found = []
        for image in images:
            key = (row.id, image.id)
            if key not in suggestion_cache:
                predictions = await run_in_threadpool(predictors.predict, row, store.read(image.sha256, image.format))
                body = to_custom_vision_json(predictions, project=project_id, iteration=row.id)
                suggestion_cache[key] = {"id": image.id, "project": project_id, "iteration": row.id,
                                         "created": body["created"], "predictions": body["predictions"],
                                         "predictionUncertainty": uncertainty(body["predictions"]),
                                         "width": image.width, "height": image.height}
            found.append({**suggestion_cache[key], **links.image(image.sha256, image.format)})
        return row, found

    def _matching(found: list[dict[str, Any]], tag_ids: list[str], threshold: float) -> list[dict[str, Any]]:
        return [s for s in found if any((not tag_ids or p["tagId"] in tag_ids) and p["probability"] >= threshold
                                        for p in s["predictions"])]

    @app.post(T + "/projects/{project_id}/images/suggested", tags=["smart labeler"])
    async def query_suggested_images(project_id: str, request: Request, iterationId: Optional[str] = None) -> dict[str, Any]:
        token = await _json(request) or {}
        _, found = await suggestions_for_untagged(project_id, iterationId, links_for(request))
        chosen = _matching(found, token.get("tagIds") or [], float(token.get("threshold") or 0.0))
        ascending = (token.get("sortBy") or "UncertaintyDescending").lower() == "uncertaintyascending"
        chosen.sort(key=lambda s: s["predictionUncertainty"], reverse=not ascending)
        start = int(token.get("continuation") or 0)
        count = max(1, min(int(token.get("maxCount") or 50), 256))
        page = chosen[start:start + count]
        more = start + count < len(chosen)
        return {"token": {**token, "continuation": str(start + count) if more else None}, "results": page}

    @app.post(T + "/projects/{project_id}/images/suggested/count", tags=["smart labeler"])
    async def query_suggested_image_count(project_id: str, request: Request, iterationId: Optional[str] = None) -> dict[str, int]:
        body = await _json(request) or {}
        row, found = await suggestions_for_untagged(project_id, iterationId, links_for(request))
        threshold = float(body.get("threshold") or 0.0)
        tag_ids = body.get("tagIds") or [t["id"] for t in row.tags]
        return {tag: len(_matching(found, [tag], threshold)) for tag in tag_ids}

    # ------------------------------------------------------------------ prediction API for published iterations
    async def predict_route(request: Request, project_id: str, published: str, task: str, kind: str,
                            nostore: bool) -> dict[str, Any]:
        if kind == "image":
            data = await inputs.image_bytes(request, settings.max_prediction_bytes)
        else:
            url = await inputs.image_url(request)
        check_key(request, "prediction-key", settings.prediction_key)
        project = repo.get_project(project_id)
        detection = repo.is_detection(project)
        if (task == "detect") != detection:
            raise bad_request("BadRequestNotSupported", f"Project {project.name!r} is "
                              f"{'an object detection' if detection else 'a classification'} project: use /"
                              f"{'detect' if detection else 'classify'}/.")
        row = iterations.published(project_id, published)
        if kind == "url":
            data = await urlfetch.fetch_image(request.app.state.http, url, settings.url_policy)
        return await score(row, data, not nostore, request.query_params.get("application"))

    for task in ("classify", "detect"):
        for kind in ("image", "url"):
            for nostore in (False, True):
                path = f"{PREDICTION}/{{project_id}}/{task}/iterations/{{published}}/{kind}" + ("/nostore" if nostore else "")

                def make(task: str = task, kind: str = kind, nostore: bool = nostore) -> Any:
                    async def endpoint(request: Request, project_id: str, published: str) -> dict[str, Any]:
                        return await predict_route(request, project_id, published, task, kind, nostore)
                    return endpoint

                app.add_api_route(path, make(), methods=["POST"], tags=["prediction"], name=f"{task}-{kind}-{nostore}")

    # ------------------------------------------------------------------ files and operations
    @app.get(BLOBS + "/{name}", tags=["files"], include_in_schema=False)
    async def blob(name: str, size: Optional[str] = None, sig: Optional[str] = None) -> Response:
        check_signature(f"{BLOBS}/{name}", sig)
        sha, _, ext = name.partition(".")
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not store.exists(sha, ext):
            raise not_found("Image", name)
        if size in ("thumbnail", "resized"):
            data = await run_in_threadpool(_resized, store.path(sha, ext), 200 if size == "thumbnail" else 800)
            return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})
        return FileResponse(store.path(sha, ext), headers={"Cache-Control": "max-age=86400"})

    from falconet.portal import STATIC
    from fastapi.responses import RedirectResponse
    from starlette.staticfiles import StaticFiles

    app.mount("/portal", StaticFiles(directory=STATIC, html=True), name="portal")

    @app.get("/", tags=["operations"], include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/portal/")

    @app.get("/falconet/about", tags=["operations"])
    async def about() -> dict[str, Any]:
        """What the portal needs to know before it asks for anything: version and whether keys are required."""
        return {"name": "Falconet training service", "version": falconet.__version__, "training": TRAINING,
                "prediction": PREDICTION, "trainingKeyRequired": settings.training_key is not None,
                "predictionKeyRequired": settings.prediction_key is not None}

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "schema_version": db.schema_version(engine)}

    app.add_middleware(CanonicalPrefix)
    return app


def _resized(path: Path, side: int) -> bytes:
    import io

    from falconet.core.images import load_image

    image = load_image(path)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _multipart_files(request: Request, body: bytes) -> list[bytes]:
    """Every part of a multipart body (the SDK sends up to 64 ``imageData`` parts)."""
    try:
        return [data for _, _, data in inputs.multipart_parts(request.headers.get("content-type", ""), body)]
    except FalconetError as exc:
        raise bad_request("BadRequestImageStream", exc.message) from exc
