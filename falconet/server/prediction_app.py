"""The prediction container: one FastAPI app that answers like Custom Vision's.

Routes (the same JSON ImagePrediction on all of them):

- the exported containers' ``POST /image`` (raw bytes or multipart ``imageData``) and ``POST /url``
  (JSON ``{"url"}`` or ``{"Url"}``), and their ``/{projectId}/...`` variants;
- the Prediction API ``/customvision/v3.0/Prediction/`` and ``/customvision/v3.1/prediction/``
  ``{projectId}/classify|detect/iterations/{publishedName}/image|url[/nostore]``, where the
  publishedName picks the model package (with one package any name works);
- ``/healthz`` (the process answers), ``/readyz`` (every model loaded and warmed up),
  ``/metrics`` (Prometheus), ``/models``, and the OpenAPI docs at ``/docs``.

Inference runs in worker threads behind :class:`InferenceGate`; the request handlers only read
bodies, fetch URLs and write JSON, so the event loop stays free under load.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional

# FastAPI reads the endpoints' annotations by name, so these live at module level (this module is
# imported only when a server is built; ``falconet.server`` itself imports nothing).
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from falconet.server.errors import UnauthorizedError, install_handlers
from falconet.server.gate import InferenceGate
from falconet.server.metrics import Metrics, MetricsMiddleware
from falconet.server.models import ModelSet, ServedModel
from falconet.server.urlfetch import UrlPolicy

#: The hosted service's prefixes; the SDK uses the v3.1 one. Case variants are accepted, undocumented.
API_PREFIXES = ("/customvision/v3.0/Prediction", "/customvision/v3.1/prediction")
HIDDEN_PREFIXES = ("/customvision/v3.0/prediction", "/customvision/v3.1/Prediction")

_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["imageData"],
                                       "properties": {"imageData": {"type": "string", "format": "binary"}}}}}}}
_URL_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"url": {"type": "string", "format": "uri"}, "Url": {"type": "string", "format": "uri"}}},
    "example": {"url": "https://example.com/photo.jpg"}}}}}
_PREDICTION_RESPONSES = {200: {"description": "ImagePrediction: id, project, iteration, created, predictions[]"},
                         400: {"description": "Not an image, corrupt, too many pixels, bad URL: {code, message}"},
                         401: {"description": "Missing or wrong Prediction-Key"},
                         413: {"description": "Body over the size limit"}, 415: {"description": "Unsupported media type"},
                         503: {"description": "Busy or still loading; see Retry-After"}}


@dataclass
class ServerSettings:
    """What ``falconet serve`` can change; the defaults are the hosted service's limits."""

    prediction_key: Optional[str] = None
    max_body_bytes: int = 4 * 1024 * 1024
    workers: int = 1
    threads: Optional[int] = None
    queue_size: int = 64
    queue_timeout_s: float = 30.0
    retry_after_s: int = 1
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)


def create_app(models: ModelSet, settings: ServerSettings | None = None, *, load: bool = True,
               log: Callable[[str], None] = print) -> FastAPI:
    """The FastAPI app serving ``models``; with ``load`` the models load (and warm up) in the
    background once the server starts, and ``/readyz`` says when they are done."""
    import falconet
    from falconet.core.prediction import to_custom_vision_json
    from falconet.server import inputs, urlfetch

    settings = settings or ServerSettings()
    metrics = Metrics()
    gate = InferenceGate(settings.workers, settings.queue_size, settings.queue_timeout_s, settings.retry_after_s,
                         on_wait=metrics.queue_wait.observe, on_reject=lambda r: metrics.rejected.labels(r).inc())
    metrics.running.set_function(lambda: gate.running)
    metrics.waiting.set_function(lambda: gate.waiting)
    for model in models.models.values():
        metrics.ready.labels(model.name).set_function(lambda m=model: float(m.ready))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The loop the app runs on, for code in other threads that must schedule work on it.
        app.state.loop = asyncio.get_running_loop()
        app.state.http = urlfetch.new_client()
        if load:
            models.load_in_background(settings.workers, settings.threads, log)
        try:
            yield
        finally:
            await app.state.http.aclose()
            gate.close()

    app = FastAPI(title="Falconet prediction server", version=falconet.__version__, lifespan=lifespan,
                  description="Custom Vision compatible prediction routes for Falconet model packages.")
    app.state.models, app.state.gate, app.state.metrics, app.state.settings = models, gate, metrics, settings
    install_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def check_key(request: Request) -> None:
        if settings.prediction_key is None:
            return
        given = request.headers.get("prediction-key")
        if given is None:
            raise UnauthorizedError("The Prediction-Key header is missing.")
        if not hmac.compare_digest(given.encode("utf-8"), settings.prediction_key.encode("utf-8")):
            raise UnauthorizedError("The Prediction-Key is not valid.")

    def infer(model: ServedModel, data: bytes) -> list[Any]:
        start = time.perf_counter()
        predictions = model.predict(data)
        metrics.inference.labels(model.name).observe(time.perf_counter() - start)
        metrics.predictions.labels(model.name).inc()
        return predictions

    async def answer(model: ServedModel, data: bytes) -> JSONResponse:
        predictions = await gate.run(infer, model, data)
        return JSONResponse(to_custom_vision_json(predictions, project=model.project, iteration=model.iteration))

    async def predict_image(request: Request, published_name: Optional[str], task: Optional[str]) -> JSONResponse:
        # The body is read (within the limit) before anything is refused, so a refused client
        # gets its answer instead of a connection reset in the middle of its upload.
        data = await inputs.image_bytes(request, settings.max_body_bytes)
        check_key(request)
        return await answer(models.select(published_name, task), data)

    async def predict_url(request: Request, published_name: Optional[str], task: Optional[str]) -> JSONResponse:
        url = await inputs.image_url(request)
        check_key(request)
        model = models.select(published_name, task)
        data = await urlfetch.fetch_image(request.app.state.http, url, settings.url_policy)
        return await answer(model, data)

    # ---------------------------------------------------------------- the exported container's routes
    @app.post("/image", tags=["container"], openapi_extra=_IMAGE_BODY, responses=_PREDICTION_RESPONSES,
              summary="Predict on an image (the exported container's route; the first model)")
    async def container_image(request: Request) -> JSONResponse:
        return await predict_image(request, None, None)

    @app.post("/url", tags=["container"], openapi_extra=_URL_BODY, responses=_PREDICTION_RESPONSES,
              summary="Predict on the image at a URL (the exported container's route; the first model)")
    async def container_url(request: Request) -> JSONResponse:
        return await predict_url(request, None, None)

    def add(path: str, kind: str, task: Optional[str], by_name: bool, visible: bool, tag: str) -> None:
        handler = predict_image if kind == "image" else predict_url

        async def endpoint(request: Request) -> JSONResponse:
            name = request.path_params.get("publishedName") if by_name else None
            return await handler(request, name, task)

        app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=visible, tags=[tag],
                          name=f"{tag}:{path}", openapi_extra=_IMAGE_BODY if kind == "image" else _URL_BODY,
                          responses=_PREDICTION_RESPONSES,
                          summary=f"{task or 'predict'} {kind}" + (" (no store)" if path.endswith("nostore") else ""))

    for kind in ("image", "url"):
        for store in ("", "/nostore"):
            add(f"/{{projectId}}/{kind}{store}", kind, None, False, False, "container")
            for task in ("classify", "detect"):
                tail = f"/{{projectId}}/{task}/iterations/{{publishedName}}/{kind}{store}"
                add(tail, kind, task, True, False, "container")
                for prefix in API_PREFIXES + HIDDEN_PREFIXES:
                    add(prefix + tail, kind, task, True, prefix in API_PREFIXES, "prediction")

    # ---------------------------------------------------------------- operations
    @app.get("/", tags=["operations"], response_class=PlainTextResponse)
    async def root() -> str:
        return f"CustomVision.ai model host harness (Falconet {falconet.__version__}); API docs at /docs"

    @app.get("/healthz", tags=["operations"], summary="The process is up and answering")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Every model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        info = [m.info() for m in models.models.values()]
        if models.ready:
            return JSONResponse({"ready": True, "models": info})
        failed = [m for m in models.models.values() if m.error is not None]
        code = "ErrorPredictionModelNotFound" if failed else "ErrorPredictionModelNotCached"
        message = "; ".join(f"{m.name}: {m.error.message}" for m in failed if m.error) or "The models are loading."
        return JSONResponse({"ready": False, "code": code, "message": message, "models": info}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/models", tags=["operations"], summary="The served models: name, task, labels, backend")
    async def list_models() -> dict[str, Any]:
        return {"default": models.default.name, "models": [m.info() for m in models.models.values()],
                "workers": settings.workers, "queue_size": settings.queue_size}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app
