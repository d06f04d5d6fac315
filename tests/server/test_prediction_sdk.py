"""The official Azure SDK (`azure-cognitiveservices-vision-customvision`) against `falconet serve`.

`CustomVisionPredictionClient` is pointed at a real server on a loopback port; its answers must
carry the same tags, probabilities and boxes as `falconet.load(...).predict(...)` in process. The
URL case fetches from a second loopback server, with the private-address guard opened for it.
"""
from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorException
from msrest.authentication import ApiKeyCredentials
from PIL import Image, ImageDraw

import falconet
from conftest import COLOURS, copy_package, draw
from falconet.core.manifest import load_manifest
from falconet.server.background import BackgroundServer
from falconet.server.models import ModelSet, package_id
from falconet.server.prediction_app import ServerSettings, create_app
from falconet.server.urlfetch import UrlPolicy

KEY = "sdk-test-key"
PROJECT = "5b8e2f4c-1d3a-4c6b-9e7f-0a1b2c3d4e5f"


def _exported(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from falconet.exporter.registry import export

    copy = copy_package(package, tmp_path_factory.mktemp("sdk"))
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
    root = tmp_path_factory.mktemp("sdk-photos")
    found = {name: draw(root / f"{name}.jpg", colour, seed=700 + i, size=(128, 100)) for i, (name, colour) in enumerate(COLOURS.items())}
    scene = Image.new("RGB", (150, 130), (125, 125, 125))
    ImageDraw.Draw(scene).rectangle([20, 30, 64, 74], fill=(230, 30, 30))
    ImageDraw.Draw(scene).ellipse([85, 60, 130, 105], fill=(30, 30, 230))
    scene.save(root / "scene.jpg", quality=95)
    found["scene"] = root / "scene.jpg"
    return found


@pytest.fixture(scope="module")
def image_host(photos: dict[str, Path]) -> Iterator[str]:
    """A plain loopback file server: the place classify_image_url points at."""
    files = {f"/{path.name}": path.read_bytes() for path in photos.values()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def endpoint(classifier: Path, detector: Path) -> Iterator[str]:
    models = ModelSet.open([("colours", classifier), ("shapes", detector)])
    settings = ServerSettings(prediction_key=KEY, threads=1, url_policy=UrlPolicy(allow_private=True, timeout_s=10))
    with BackgroundServer(create_app(models, settings, log=lambda s: None)) as server:
        yield server.url


def client(endpoint: str, key: str = KEY) -> CustomVisionPredictionClient:
    return CustomVisionPredictionClient(endpoint, ApiKeyCredentials(in_headers={"Prediction-Key": key}))


def assert_same(result: Any, expected: list[Any]) -> None:
    """The SDK's ImagePrediction holds the in-process predictions, in the same order."""
    got = result.predictions
    assert [p.tag_name for p in got] == [p.tag_name for p in expected]
    assert [p.tag_id for p in got] == [p.tag_id for p in expected]
    assert [p.probability for p in got] == pytest.approx([p.probability for p in expected], abs=1e-6)
    for g, e in zip(got, expected):
        assert g.tag_type == e.tag_type
        if e.bounding_box is None:
            assert g.bounding_box is None
        else:
            assert [g.bounding_box.left, g.bounding_box.top, g.bounding_box.width, g.bounding_box.height] == pytest.approx(
                [e.bounding_box.left, e.bounding_box.top, e.bounding_box.width, e.bounding_box.height], abs=1e-6)


def test_classify_image_matches_in_process(endpoint: str, classifier: Path, photos: dict[str, Path]) -> None:
    predictor = falconet.load(classifier)
    sdk = client(endpoint)
    for name in ("red", "blue", "green"):
        expected = predictor.predict(photos[name])
        assert expected[0].tag_name == name
        with open(photos[name], "rb") as fh:
            result = sdk.classify_image(PROJECT, "colours", fh)
        assert_same(result, expected)
        assert result.iteration == package_id(load_manifest(classifier))
        assert result.created.tzinfo is not None
        with open(photos[name], "rb") as fh:
            assert_same(sdk.classify_image_with_no_store(PROJECT, "colours", fh, application="tests"), expected)


def test_classify_image_url_matches_in_process(endpoint: str, classifier: Path, photos: dict[str, Path], image_host: str) -> None:
    predictor = falconet.load(classifier)
    sdk = client(endpoint)
    for name in ("red", "green"):
        result = sdk.classify_image_url(PROJECT, "colours", url=f"{image_host}/{name}.jpg")
        assert_same(result, predictor.predict(photos[name]))
    result = sdk.classify_image_url_with_no_store(PROJECT, "colours", url=f"{image_host}/blue.jpg")
    assert_same(result, predictor.predict(photos["blue"]))


def test_detect_image_matches_in_process(endpoint: str, detector: Path, photos: dict[str, Path], image_host: str) -> None:
    expected = falconet.load(detector).predict(photos["scene"])
    assert expected and all(p.bounding_box is not None for p in expected)
    sdk = client(endpoint)
    with open(photos["scene"], "rb") as fh:
        result = sdk.detect_image(PROJECT, "shapes", fh)
    assert_same(result, expected)
    assert result.iteration == package_id(load_manifest(detector))
    assert_same(sdk.detect_image_url_with_no_store(PROJECT, "shapes", url=f"{image_host}/scene.jpg"), expected)


def test_sdk_errors_carry_the_code_and_status(endpoint: str, photos: dict[str, Path], tmp_path: Path) -> None:
    with open(photos["red"], "rb") as fh, pytest.raises(CustomVisionErrorException) as wrong_key:
        client(endpoint, "not-the-key").classify_image(PROJECT, "colours", fh)
    assert wrong_key.value.response.status_code == 401 and wrong_key.value.error.code == "Unauthorized"

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"these are notes, not a photo")
    with open(not_an_image, "rb") as fh, pytest.raises(CustomVisionErrorException) as bad_image:
        client(endpoint).classify_image(PROJECT, "colours", fh)
    assert bad_image.value.response.status_code == 400 and bad_image.value.error.code == "BadRequestImageFormat"

    with open(photos["red"], "rb") as fh, pytest.raises(CustomVisionErrorException) as wrong_task:
        client(endpoint).detect_image(PROJECT, "colours", fh)
    assert wrong_task.value.error.code == "BadRequestNotSupported"
    assert "classification model" in wrong_task.value.error.message
