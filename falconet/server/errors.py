"""HTTP errors of the prediction server, in the hosted service's shape: ``{"code", "message"}``.

The hosted Prediction API answers errors with a ``CustomVisionError`` body (the official SDK parses
exactly these two fields into ``CustomVisionErrorException``), and its codes come from the SDK's
``CustomVisionErrorCodes``; we reuse them where one fits so client code that branches on codes keeps
working. The exported Docker containers answer "Error processing image" with status 500 (and the
URL route an error string with 200): we deliberately do not copy that, every failure gets the
status that fits.
"""
from __future__ import annotations

import logging
from typing import Any

from falconet.core.errors import FalconetError

log = logging.getLogger("falconet.server")


class PayloadTooLargeError(FalconetError):
    code = "BadRequestImageSizeBytes"
    status = 413


class UnsupportedMediaTypeError(FalconetError):
    code = "UnsupportedMediaType"
    status = 415


class UnauthorizedError(FalconetError):
    code = "Unauthorized"
    status = 401


class ImageUrlError(FalconetError):
    """The URL cannot be fetched: bad scheme, refused address, unreachable, not 200, too slow."""

    code = "BadRequestImageUrl"
    status = 400


class ModelNotFoundError(FalconetError):
    """The publishedName in the path names no served model."""

    code = "NotFoundIteration"
    status = 404


class WrongTaskError(FalconetError):
    """``classify`` on a detection model or ``detect`` on a classifier."""

    code = "BadRequestNotSupported"
    status = 400


class UnavailableError(FalconetError):
    """503 with a Retry-After header: overloaded, or the model is still loading."""

    code = "ErrorPredictionServiceUnavailable"
    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = max(1, int(retry_after_s))


def error_headers(exc: FalconetError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = 'ApiKey header="Prediction-Key"'
    return headers


#: Starlette's own HTTP errors (unknown route, wrong method) -> a stable code.
HTTP_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "BadRequestImageSizeBytes",
              415: "UnsupportedMediaType"}


def install_handlers(app: Any) -> None:
    """Make every failure, ours or the framework's, answer JSON ``{code, message}``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(FalconetError)
    async def _falconet(request: Any, exc: FalconetError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=error_headers(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Any, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "Error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"code": code, "message": message}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Any, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"code": "BadRequest", "message": f"{where}: {first.get('msg', 'invalid request')}"},
                            status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Any, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"code": "ErrorUnknown", "message": f"Internal error: {type(exc).__name__}"}, status_code=500)
