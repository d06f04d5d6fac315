"""Reading what a prediction request sends: raw bytes, a multipart ``imageData`` part, or a URL.

The body is read with a hard cap (413 as soon as it is exceeded, from the Content-Length when
there is one), so a client cannot make the server buffer more than the limit. Media types are
checked the way the hosted service does: an image route wants image bytes (octet-stream, image/*
or multipart), a URL route wants JSON; anything else is 415.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from falconet.core.errors import FalconetError, InvalidImageError
from falconet.server.errors import PayloadTooLargeError, UnsupportedMediaTypeError

#: Room for multipart boundaries and part headers on top of the image itself.
MULTIPART_OVERHEAD = 16 * 1024
#: A body at most this many times the limit is read and dropped before answering 413, so the
#: client gets the answer instead of a reset connection; bigger ones are cut off.
DRAIN_FACTOR = 4
#: A URL request is a tiny JSON document.
MAX_URL_BODY = 16 * 1024

RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")


def media_type(request: Any) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _human(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    return f"{n / 1024:.1f} KB".replace(".0 KB", " KB") if n >= 1024 else f"{n} bytes"


async def read_body(request: Any, limit: int) -> bytes:
    """The whole body, or PayloadTooLargeError once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise FalconetError("Content-Length is not a number.", code="BadRequest", status=400) from None
        if size > limit:
            if size <= limit * DRAIN_FACTOR:
                async for _ in request.stream():
                    pass
            raise PayloadTooLargeError(f"The body is {_human(size)}; the limit is {_human(limit)}.")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            # Keep reading (and dropping) a while, so the client finishes sending and reads the 413.
            if received <= limit * DRAIN_FACTOR:
                continue
            break
        chunks.append(chunk)
    if received > limit:
        raise PayloadTooLargeError(f"The body is over the limit of {_human(limit)}.")
    return b"".join(chunks)


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, bool, bytes]]:
    """(field name, is a file, raw bytes) of every part of a multipart/form-data body.

    Parts come back as bytes whether or not they carry a filename: the official SDK sends image
    bytes as a plain form field, which a text-decoding form parser would corrupt.
    """
    import email.parser
    import email.policy

    if "boundary=" not in content_type.lower():
        raise InvalidImageError("The multipart body has no boundary in its Content-Type.")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise InvalidImageError("The multipart body cannot be read.")
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            parts.append((str(part.get_param("name", header="content-disposition") or ""), part.get_filename() is not None,
                          payload))
    return parts


def _multipart_image(request: Any, body: bytes, limit: int) -> bytes:
    """The ``imageData`` part (the SDK's field), else the first part."""
    parts = multipart_parts(request.headers.get("content-type", ""), body)
    data = next((d for name, _, d in parts if name == "imageData"), None)
    if data is None:
        data = next((d for _, is_file, d in parts if is_file), None)
    if data is None:
        raise InvalidImageError("The multipart body has no imageData part.")
    if len(data) > limit:
        raise PayloadTooLargeError(f"The image is over the limit of {_human(limit)}.")
    if data[:16].strip() and _looks_base64(data):
        # A form field of base64 text: the hosted service accepts base64 images too.
        return base64.b64decode(data, validate=False)
    return data


def _looks_base64(data: bytes) -> bool:
    try:
        base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(data.strip()) >= 16


async def image_bytes(request: Any, limit: int) -> bytes:
    """The image of a ``/image`` request, whatever way it came."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        return _multipart_image(request, await read_body(request, limit + MULTIPART_OVERHEAD), limit)
    if kind in RAW_TYPES or kind.startswith("image/"):
        # x-www-form-urlencoded is what `curl --data-binary @photo.jpg` sends without -H; the body
        # is still the image, so it is taken as such rather than refused.
        return await read_body(request, limit)
    raise UnsupportedMediaTypeError(f"Media type {kind!r} is not supported here: send the image as "
                                    "application/octet-stream (raw bytes) or multipart/form-data (field imageData).")


async def image_url(request: Any) -> str:
    """The URL of a ``/url`` request: JSON ``{"url": ...}`` (the SDK) or ``{"Url": ...}`` (the docs)."""
    kind = media_type(request)
    if kind not in ("application/json", "") and not kind.endswith("+json"):
        raise UnsupportedMediaTypeError(f"Media type {kind!r} is not supported here: send application/json "
                                        '{"url": "https://..."}.')
    body = await read_body(request, MAX_URL_BODY)
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FalconetError('The body is not JSON; send {"url": "https://..."}.', code="BadRequest", status=400) from None
    url = None
    if isinstance(data, dict):
        url = next((v for k, v in data.items() if k.lower() == "url"), None)
    if not isinstance(url, str) or not url.strip():
        raise FalconetError('The body has no "url" (or "Url") string.', code="BadRequestImageUrl", status=400)
    return url.strip()
