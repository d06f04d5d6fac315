"""A thin client for a remote ``falconet serve`` (or any Custom Vision prediction container).

``falconet stream --remote URL`` uses it when the camera sits on a small device and the model on
a bigger one. Frames go as JPEG bytes to the container route ``POST /image``; the answer is the
Custom Vision ImagePrediction JSON. It uses the standard library only (one keep-alive connection),
so the camera side needs nothing beyond OpenCV.
"""
from __future__ import annotations

import http.client
import json
from typing import Any, Optional
from urllib.parse import urlsplit

from falconet.core.errors import FalconetError
from falconet.core.prediction import BoundingBox, Prediction


class RemoteError(FalconetError):
    """The remote server could not be reached or refused the frame."""

    code = "RemotePredictionFailed"
    status = 502


def prediction_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path): a bare ``http://host:8080`` means the container route ``/image``;
    a URL that already names a route (``.../image``, ``.../image/nostore``, a Prediction API path)
    is used as it is."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"--remote must be an http(s) URL such as http://host:8080, got {url!r}.",
                          code="BadRequestRemoteUrl", status=400)
    path = parts.path.rstrip("/")
    if not (path.endswith("/image") or path.endswith("/image/nostore")):
        path = f"{path}/image"
    if parts.query:
        path = f"{path}?{parts.query}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, path


def parse_predictions(body: dict[str, Any]) -> list[Prediction]:
    """Custom Vision prediction objects -> Predictions (the JSON carries no class index: -1)."""
    found = []
    for item in body.get("predictions", []):
        box = item.get("boundingBox")
        found.append(Prediction(
            tag_id=str(item.get("tagId", "")), tag_name=str(item.get("tagName", "")),
            probability=float(item.get("probability", 0.0)), tag_index=-1,
            bounding_box=BoundingBox(float(box["left"]), float(box["top"]), float(box["width"]), float(box["height"])) if box else None,
            tag_type=str(item.get("tagType", "Regular"))))
    return found


class RemotePredictor:
    """POSTs JPEG bytes; keeps one connection open and reopens it once when the server closed it."""

    def __init__(self, url: str, *, prediction_key: Optional[str] = None, timeout_s: float = 10.0) -> None:
        self.scheme, self.host, self.port, self.path = prediction_url(url)
        self.url = f"{self.scheme}://{self.host}:{self.port}{self.path}"
        self.prediction_key = prediction_key
        self.timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._connection = cls(self.host, self.port, timeout=self.timeout_s)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _post(self, jpeg: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/octet-stream", "Accept": "application/json"}
        if self.prediction_key:
            headers["Prediction-Key"] = self.prediction_key
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request("POST", self.path, body=jpeg, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest) as exc:
                # A keep-alive connection the server closed between frames: reopen once.
                self.close()
                if attempt == 2:
                    raise RemoteError(f"{self.url} closed the connection: {exc}") from exc
            except OSError as exc:
                self.close()
                raise RemoteError(f"Cannot reach {self.url}: {exc}") from exc
        raise AssertionError("unreachable")

    def predict_jpeg(self, jpeg: bytes, threshold: float = 0.0) -> list[Prediction]:
        status, body = self._post(jpeg)
        try:
            data = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = {"message": body[:200].decode("utf-8", "replace")}
        if status != 200:
            message = data.get("message") or data.get("detail") or str(data)[:200]
            raise RemoteError(f"{self.url} answered {status}: {message}", code=str(data.get("code") or "RemotePredictionFailed"))
        if not isinstance(data, dict) or "predictions" not in data:
            raise RemoteError(f"{self.url} did not answer with a prediction (no 'predictions' in {str(data)[:200]!r}).")
        return [p for p in parse_predictions(data) if p.probability >= threshold]
