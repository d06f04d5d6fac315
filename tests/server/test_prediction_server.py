"""`falconet serve` against a real uvicorn server on loopback: routes, JSON, errors, guard, overload.

Every answer is compared with `falconet.load(...).predict(...)` in process on the same exported
file; every bad input is sent over HTTP and must come back with its status and `{code, message}`.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import falconet
from conftest import COLOURS, REPO, copy_package, draw
from falconet.core.manifest import load_manifest
from falconet.server.background import BackgroundServer
from falconet.server.models import ModelSet, package_id, parse_model_specs
from falconet.server.prediction_app import ServerSettings, create_app
from falconet.server.urlfetch import UrlPolicy, refused_reason

KEY = "test-prediction-key"
API31 = "/customvision/v3.1/prediction/8d3f0a52-0000-4000-8000-000000000001"
API30 = "/customvision/v3.0/Prediction/8d3f0a52-0000-4000-8000-000000000001"


# ------------------------------------------------------------------------------ packages and images
def _exported(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from falconet.exporter.registry import export

    copy = copy_package(package, tmp_path_factory.mktemp("served"))
    export(copy, ["onnx"])
    return copy


@pytest.fixture(scope="module")
def classifier(multiclass_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _exported(multiclass_package, tmp_path_factory)


@pytest.fixture(scope="module")
def detector(detection_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _exported(detection_package, tmp_path_factory)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    found = {name: draw(root / f"{name}.jpg", colour, seed=900 + i, size=(120, 96)) for i, (name, colour) in enumerate(COLOURS.items())}
    found["png"] = draw(root / "green.png", COLOURS["green"], seed=950, size=(100, 90))
    found["scene"] = _scene(root / "scene.jpg")
    return found


def _scene(path: Path) -> Path:
    """A red square and a blue disc, like the detection fixture's training scenes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), (120, 120, 120))
    ImageDraw.Draw(image).rectangle([30, 20, 75, 65], fill=(230, 30, 30))
    ImageDraw.Draw(image).ellipse([95, 50, 140, 95], fill=(30, 30, 230))
    image.save(path, quality=95)
    return path


def assert_same(body: dict[str, Any], expected: list[Any]) -> None:
    """The HTTP answer carries the in-process predictions: same tags, order, probabilities, boxes."""
    got = body["predictions"]
    assert [p["tagName"] for p in got] == [p.tag_name for p in expected]
    assert [p["tagId"] for p in got] == [p.tag_id for p in expected]
    for g, e in zip(got, expected):
        assert g["probability"] == pytest.approx(e.probability, abs=1e-6)
        assert g["tagType"] == e.tag_type
        if e.bounding_box is None:
            assert g["boundingBox"] is None
        else:
            assert [g["boundingBox"][k] for k in ("left", "top", "width", "height")] == pytest.approx(
                [e.bounding_box.left, e.bounding_box.top, e.bounding_box.width, e.bounding_box.height], abs=1e-6)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# ------------------------------------------------------------------------------ a loopback image host
class ImageHost:
    """A second loopback server the /url route fetches from, with a few misbehaving paths."""

    def __init__(self, files: dict[str, bytes]) -> None:
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                host.hits += 1
                if self.path == "/slow":
                    time.sleep(3)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/red.jpg")
                    self.end_headers()
                    return
                data = host.files.get(self.path.lstrip("/"))
                if self.path == "/big":
                    data = b"\xff" * (host.big_bytes)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.files = files
        self.hits = 0
        self.big_bytes = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def image_host(photos: dict[str, Path]) -> Iterator[ImageHost]:
    host = ImageHost({"red.jpg": photos["red"].read_bytes(), "blue.jpg": photos["blue"].read_bytes(),
                      "text": b"not an image at all"})
    yield host
    host.close()


# ------------------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def server(classifier: Path, detector: Path) -> Iterator[BackgroundServer]:
    """Two packages by name, a prediction key, the default limits and the URL guard closed."""
    models = ModelSet.open(parse_model_specs([], [f"colours={classifier}", f"shapes={detector}"]))
    app = create_app(models, ServerSettings(prediction_key=KEY, workers=2, threads=1), log=lambda s: None)
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def small_server(classifier: Path) -> Iterator[BackgroundServer]:
    """One package, no key, one worker with a queue of 2, small limits, the URL guard opened."""
    settings = ServerSettings(max_body_bytes=256 * 1024, workers=1, threads=1, queue_size=2, queue_timeout_s=1.5,
                              retry_after_s=2, url_policy=UrlPolicy(timeout_s=1.0, max_bytes=256 * 1024, allow_private=True))
    app = create_app(ModelSet.open([("colours", classifier)]), settings, log=lambda s: None)
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, headers={"Prediction-Key": KEY}) as c:
        yield c


OCTET = {"Content-Type": "application/octet-stream"}


# ------------------------------------------------------------------------------ answers
def test_container_image_route_answers_like_the_hosted_service(server: BackgroundServer, client: httpx.Client,
                                                               classifier: Path, photos: dict[str, Path]) -> None:
    predictor = falconet.load(classifier)
    for name in ("red", "blue", "png"):
        expected = predictor.predict(photos[name])
        raw = client.post(server.url + "/image", content=photos[name].read_bytes(), headers=OCTET)
        assert raw.status_code == 200, raw.text
        body = raw.json()
        assert set(body) == {"id", "project", "iteration", "created", "predictions"}
        uuid.UUID(body["id"])
        assert body["iteration"] == package_id(load_manifest(classifier))
        assert body["project"] == load_manifest(classifier).project
        created = dt.datetime.fromisoformat(body["created"].replace("Z", "+00:00"))
        assert created.utcoffset() == dt.timedelta(0) and abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 60
        assert_same(body, expected)
        assert expected[0].tag_name == ("green" if name == "png" else name)
        form = client.post(server.url + "/image", files={"imageData": (photos[name].name, photos[name].read_bytes(), "image/jpeg")})
        assert form.status_code == 200, form.text
        assert_same(form.json(), expected)
    # curl --data-binary without -H sends x-www-form-urlencoded: the body is still the image.
    curl_default = client.post(server.url + "/image", content=photos["red"].read_bytes(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_same(curl_default.json(), predictor.predict(photos["red"]))


def test_prediction_api_paths_pick_the_package_by_published_name(server: BackgroundServer, client: httpx.Client,
                                                                 classifier: Path, detector: Path,
                                                                 photos: dict[str, Path]) -> None:
    red, scene = photos["red"].read_bytes(), photos["scene"].read_bytes()
    expected_red = falconet.load(classifier).predict(photos["red"])
    expected_scene = falconet.load(detector).predict(photos["scene"])
    assert expected_scene and all(p.bounding_box is not None for p in expected_scene)
    for prefix in (API31, API30):
        for store in ("", "/nostore"):
            answer = client.post(f"{server.url}{prefix}/classify/iterations/colours/image{store}", content=red, headers=OCTET)
            assert answer.status_code == 200, answer.text
            assert_same(answer.json(), expected_red)
            answer = client.post(f"{server.url}{prefix}/detect/iterations/shapes/image{store}",
                                 files={"imageData": ("scene.jpg", scene, "image/jpeg")})
            assert answer.status_code == 200, answer.text
            assert answer.json()["iteration"] == package_id(load_manifest(detector))
            assert_same(answer.json(), expected_scene)
    body = assert_error(client.post(f"{server.url}{API31}/classify/iterations/nope/image", content=red, headers=OCTET),
                        404, "NotFoundIteration")
    assert "colours" in body["message"] and "shapes" in body["message"]
    assert_error(client.post(f"{server.url}{API31}/classify/iterations/shapes/image", content=red, headers=OCTET),
                 400, "BadRequestNotSupported")
    assert_error(client.post(f"{server.url}{API31}/detect/iterations/colours/image", content=red, headers=OCTET),
                 400, "BadRequestNotSupported")
    assert_error(client.post(f"{server.url}{API31}/segment/iterations/colours/image", content=red, headers=OCTET),
                 404, "NotFound")


def test_prediction_key_is_required_when_configured(server: BackgroundServer, photos: dict[str, Path]) -> None:
    red = photos["red"].read_bytes()
    for headers in ({}, {"Prediction-Key": "wrong"}, {"Prediction-Key": KEY + "x"}):
        for path in ("/image", f"{API31}/classify/iterations/colours/image"):
            answer = httpx.post(server.url + path, content=red, headers={**OCTET, **headers})
            assert_error(answer, 401, "Unauthorized")
    url_answer = httpx.post(server.url + "/url", json={"url": "http://example.com/a.jpg"})
    assert_error(url_answer, 401, "Unauthorized")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


# ------------------------------------------------------------------------------ bad input
def test_body_over_the_limit_is_413(server: BackgroundServer, small_server: BackgroundServer, client: httpx.Client) -> None:
    over = b"\xff" * (4 * 1024 * 1024 + 1)
    assert_error(client.post(server.url + "/image", content=over, headers=OCTET), 413, "BadRequestImageSizeBytes")
    # Without Content-Length (chunked upload) the cap applies while reading.
    chunks = (over[i:i + 65536] for i in range(0, len(over), 65536))
    assert_error(client.post(server.url + "/image", content=chunks, headers=OCTET), 413, "BadRequestImageSizeBytes")
    # The limit is configurable: 256 KB on the small server, multipart included.
    medium = b"\xff" * (300 * 1024)
    assert_error(client.post(small_server.url + "/image", content=medium, headers=OCTET), 413, "BadRequestImageSizeBytes")
    assert_error(client.post(small_server.url + "/image", files={"imageData": ("a.jpg", medium, "image/jpeg")}),
                 413, "BadRequestImageSizeBytes")
    # Just under the limit is read, and refused for what it is: not an image.
    under = b"\xff" * (4 * 1024 * 1024 - 10)
    assert_error(client.post(server.url + "/image", content=under, headers=OCTET), 400, "BadRequestImageFormat")


def test_not_an_image_corrupt_truncated_or_empty_is_400(server: BackgroundServer, client: httpx.Client,
                                                        photos: dict[str, Path]) -> None:
    jpeg = photos["red"].read_bytes()
    cases = {
        "text": b"hello, this is not an image",
        "empty": b"",
        "truncated": jpeg[: len(jpeg) // 2],
        "corrupt": jpeg[:20] + bytes(range(256)) * 8,
        "html": b"<html><body>hi</body></html>",
    }
    for name, data in cases.items():
        answer = client.post(server.url + "/image", content=data, headers=OCTET)
        assert_error(answer, 400, "BadRequestImageFormat")
    no_part = client.post(server.url + "/image", files={"note": (None, "x")})
    assert "no imageData" in assert_error(no_part, 400, "BadRequestImageFormat")["message"]
    # A form field (not a file) is read as base64, as the hosted service accepts base64 images.
    import base64

    as_field = client.post(server.url + "/image", files={"imageData": (None, base64.b64encode(jpeg).decode())})
    assert as_field.status_code == 200, as_field.text


def test_unsupported_media_type_is_415(server: BackgroundServer, client: httpx.Client, photos: dict[str, Path]) -> None:
    jpeg = photos["red"].read_bytes()
    for path in ("/image", f"{API31}/classify/iterations/colours/image"):
        for content_type in ("application/json", "text/plain", "application/xml"):
            answer = client.post(server.url + path, content=jpeg, headers={"Content-Type": content_type})
            assert_error(answer, 415, "UnsupportedMediaType")
    for path in ("/url", f"{API31}/classify/iterations/colours/url"):
        answer = client.post(server.url + path, content=jpeg, headers=OCTET)
        assert_error(answer, 415, "UnsupportedMediaType")


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height: ~110 KB that would decode to width*height bytes and more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join([compressor.compress(row) for _ in range(height)] + [compressor.flush()])
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _peak_rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def test_decompression_bomb_is_refused_without_being_decoded(server: BackgroundServer, client: httpx.Client) -> None:
    bomb = _png_bomb(30000, 30000)
    assert len(bomb) < 4 * 1024 * 1024
    measurable = os.path.exists("/proc/self/clear_refs")
    if measurable:
        with open("/proc/self/clear_refs", "w") as fh:  # reset this process's peak RSS (the server runs in it)
            fh.write("5")
        before = _peak_rss_kb()
    answer = client.post(server.url + "/image", content=bomb, headers={"Content-Type": "image/png"})
    body = assert_error(answer, 400, "BadRequestImageDimensions")
    assert "pixels" in body["message"]
    if measurable:
        # Decoding would need 900 MB (mode "1") and 2.7 GB as RGB; refusing from the header needs ~nothing.
        assert _peak_rss_kb() - before < 200 * 1024


# ------------------------------------------------------------------------------ the URL route
def test_url_guard_refuses_internal_addresses_by_default(server: BackgroundServer, client: httpx.Client,
                                                         image_host: ImageHost) -> None:
    hits = image_host.hits
    for body in ({"url": image_host.url + "/red.jpg"}, {"Url": image_host.url.replace("127.0.0.1", "localhost") + "/red.jpg"},
                 {"url": "http://169.254.169.254/latest/meta-data/"}, {"url": "http://10.1.2.3/cam.jpg"},
                 {"url": "http://[::1]:9/a.jpg"}, {"url": "http://[::ffff:127.0.0.1]/a.jpg"}, {"url": "http://0.0.0.0/a.jpg"}):
        answer = client.post(server.url + "/url", json=body)
        message = assert_error(answer, 400, "BadRequestImageUrl")["message"]
        assert "public addresses" in message
    assert image_host.hits == hits, "a refused URL must not be fetched"
    for url in ("file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "/relative.jpg"):
        message = assert_error(client.post(server.url + "/url", json={"url": url}), 400, "BadRequestImageUrl")["message"]
        assert "http" in message
    assert_error(client.post(server.url + "/url", json={"picture": "x"}), 400, "BadRequestImageUrl")
    assert_error(client.post(server.url + "/url", content=b"{not json", headers={"Content-Type": "application/json"}),
                 400, "BadRequest")


def test_refused_reason_covers_every_internal_range() -> None:
    refused = ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.10", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::"]
    for address in refused:
        assert refused_reason(ipaddress.ip_address(address)) is not None, address
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert refused_reason(ipaddress.ip_address(address)) is None, address


def test_url_route_fetches_with_timeout_and_size_cap(small_server: BackgroundServer, client: httpx.Client,
                                                     image_host: ImageHost, classifier: Path, photos: dict[str, Path]) -> None:
    predictor = falconet.load(classifier)
    for body in ({"url": image_host.url + "/red.jpg"}, {"Url": image_host.url + "/blue.jpg"}):
        answer = client.post(small_server.url + "/url", json=body)
        assert answer.status_code == 200, answer.text
        assert_same(answer.json(), predictor.predict(photos["red" if "red" in str(body) else "blue"]))
    api = client.post(f"{small_server.url}{API31}/classify/iterations/any/url/nostore", json={"url": image_host.url + "/redirect"})
    assert api.status_code == 200, api.text
    assert_same(api.json(), predictor.predict(photos["red"]))

    started = time.perf_counter()
    message = assert_error(client.post(small_server.url + "/url", json={"url": image_host.url + "/slow"}), 400, "BadRequestImageUrl")["message"]
    assert "1 s" in message and time.perf_counter() - started < 2.5
    image_host.big_bytes = 300 * 1024
    assert_error(client.post(small_server.url + "/url", json={"url": image_host.url + "/big"}), 400, "BadRequestImageSizeBytes")
    assert "404" in assert_error(client.post(small_server.url + "/url", json={"url": image_host.url + "/missing"}),
                                 400, "BadRequestImageUrl")["message"]
    assert_error(client.post(small_server.url + "/url", json={"url": image_host.url + "/text"}), 400, "BadRequestImageFormat")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert_error(client.post(small_server.url + "/url", json={"url": f"http://127.0.0.1:{closed}/a.jpg"}), 400, "BadRequestImageUrl")


# ------------------------------------------------------------------------------ load
def _hold_worker(server: BackgroundServer) -> tuple[threading.Event, Any]:
    """Occupy the server's only inference worker until the event is set."""
    app = server.app
    release = threading.Event()
    job = asyncio.run_coroutine_threadsafe(app.state.gate.run(release.wait, 30), app.state.loop)
    _wait_for(lambda: app.state.gate.running == 1)
    return release, job


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_burst_queues_then_overload_answers_503_with_retry_after(small_server: BackgroundServer,
                                                                 photos: dict[str, Path]) -> None:
    gate = small_server.app.state.gate
    red = photos["red"].read_bytes()
    release, job = _hold_worker(small_server)
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(small_server.url + "/image", content=red, headers=OCTET, timeout=30))

    queued = [threading.Thread(target=send) for _ in range(2)]
    for t in queued:
        t.start()
    _wait_for(lambda: gate.waiting == 2)
    refused = httpx.post(small_server.url + "/image", content=red, headers=OCTET, timeout=30)
    body = assert_error(refused, 503, "ErrorPredictionServiceUnavailable")
    assert refused.headers["Retry-After"] == "2"
    assert "busy" in body["message"]
    release.set()
    job.result(timeout=10)
    for t in queued:
        t.join(timeout=30)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    metrics = httpx.get(small_server.url + "/metrics").text
    assert 'falconet_rejected_requests_total{reason="queue_full"} 1.0' in metrics


def test_waiting_too_long_answers_503_instead_of_hanging(small_server: BackgroundServer, photos: dict[str, Path]) -> None:
    red = photos["red"].read_bytes()
    release, job = _hold_worker(small_server)
    try:
        started = time.perf_counter()
        answer = httpx.post(small_server.url + "/image", content=red, headers=OCTET, timeout=30)
        waited = time.perf_counter() - started
    finally:
        release.set()
        job.result(timeout=10)
    body = assert_error(answer, 503, "ErrorPredictionServiceUnavailable")
    assert answer.headers["Retry-After"] == "2" and "waited 1.5 s" in body["message"]
    assert 1.4 < waited < 10
    after = httpx.post(small_server.url + "/image", content=red, headers=OCTET, timeout=30)
    assert after.status_code == 200


# ------------------------------------------------------------------------------ operations
def test_health_readiness_metrics_and_docs(server: BackgroundServer, client: httpx.Client, photos: dict[str, Path]) -> None:
    red = photos["red"].read_bytes()
    assert client.post(server.url + "/image", content=red, headers=OCTET).status_code == 200
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {m["name"]: m["task"] for m in ready.json()["models"]} == {"colours": "classification-multiclass", "shapes": "detection"}
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'falconet_http_requests_total{method="POST",route="/image",status="200"}' in text
    assert 'falconet_http_request_duration_seconds_bucket{le="0.5",route="/image"}' in text
    count = next(line for line in text.splitlines() if line.startswith('falconet_inference_seconds_count{model="colours"}'))
    assert float(count.split()[-1]) >= 1
    assert 'falconet_model_ready{model="shapes"} 1.0' in text
    assert "falconet_queue_wait_seconds_count" in text and "falconet_inference_running" in text
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in ("/image", "/url", "/healthz", "/readyz", "/metrics",
                 "/customvision/v3.1/prediction/{projectId}/classify/iterations/{publishedName}/image",
                 "/customvision/v3.0/Prediction/{projectId}/detect/iterations/{publishedName}/url/nostore"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/image"]["post"]["requestBody"]["content"]
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_readyz_reports_a_model_that_failed_to_load(classifier: Path, tmp_path: Path, photos: dict[str, Path]) -> None:
    broken = copy_package(classifier, tmp_path)
    model_file = broken / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-100] + b"\0" * 100)  # the sha256 in the manifest no longer matches
    app = create_app(ModelSet.open([("broken", broken)]), ServerSettings(threads=1), log=lambda s: None)
    with BackgroundServer(app).start(ready_path=None) as running:
        _wait_for(lambda: app.state.models.default.error is not None, 60)
        ready = httpx.get(running.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["code"] == "ErrorPredictionModelNotFound" and "Retry-After" in ready.headers
        assert httpx.get(running.url + "/healthz").status_code == 200
        red = photos["red"].read_bytes()
        answer = httpx.post(running.url + "/image", content=red, headers=OCTET)
        assert_error(answer, 503, "ErrorPredictionModelNotFound")


def test_model_specs_need_unique_names(classifier: Path) -> None:
    from falconet.core.errors import FalconetError

    assert parse_model_specs([classifier], ["other=/x"]) == [(classifier.resolve().name, classifier), ("other", Path("/x"))]
    with pytest.raises(FalconetError, match="--model NAME=PATH"):
        parse_model_specs([classifier, classifier], [])
    with pytest.raises(FalconetError, match="NAME=PATH"):
        parse_model_specs([], ["no-equals-sign"])


# ------------------------------------------------------------------------------ the command
def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


def test_serve_command_binds_loopback_by_default(classifier: Path, photos: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FALCONET_PREDICTION_KEY": "from-env"}
    command = [sys.executable, "-m", "falconet.cli", "serve", str(classifier), "--port", str(port), "--threads", "1"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "falconet serve did not become ready"
                time.sleep(0.2)
        red = photos["red"].read_bytes()
        assert httpx.post(f"http://127.0.0.1:{port}/image", content=red, headers=OCTET).status_code == 401
        answer = httpx.post(f"http://127.0.0.1:{port}/image", content=red, headers={**OCTET, "Prediction-Key": "from-env"})
        assert_same(answer.json(), falconet.load(classifier).predict(photos["red"]))
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{port}/healthz", timeout=2)
    finally:
        process.terminate()
        process.wait(timeout=20)
    missing = subprocess.run([sys.executable, "-m", "falconet.cli", "serve", str(tmp_path / "nothing")], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "InvalidModelPackage" in missing.stderr


def test_the_server_never_imports_torch(classifier: Path, photos: dict[str, Path]) -> None:
    """A Raspberry Pi installs the runtime and the server alone: serving must not need torch."""
    script = f"""
import sys, httpx
from falconet.server.background import BackgroundServer
from falconet.server.models import ModelSet
from falconet.server.prediction_app import ServerSettings, create_app
app = create_app(ModelSet.open([("m", {str(classifier)!r})]), ServerSettings(threads=1), log=lambda s: None)
with BackgroundServer(app) as server:
    answer = httpx.post(server.url + "/image", content=open({str(photos["red"])!r}, "rb").read(),
                        headers={{"Content-Type": "application/octet-stream"}})
    assert answer.status_code == 200, answer.text
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_command_defaults_for_size_and_concurrency() -> None:
    from falconet.server.commands import concurrency, parse_size

    assert parse_size("4MB") == 4 * 1024 * 1024 and parse_size("512KB") == 512 * 1024 and parse_size("1000") == 1000
    assert concurrency(2, None, None) == (2, 1)
    assert concurrency(4, None, None) == (2, 2)
    assert concurrency(1, None, None) == (1, 1)
    assert concurrency(16, 4, None) == (4, 4) and concurrency(8, 1, 3) == (1, 3)
