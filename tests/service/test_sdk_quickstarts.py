"""The official SDK's quickstart flows against a live ``falconet service`` on a loopback port.

`CustomVisionTrainingClient` and `CustomVisionPredictionClient` (azure-cognitiveservices-vision-
customvision 3.1.1) are pointed at Falconet with only the endpoint and keys changed: project ->
tags -> uploads -> train -> poll -> performance -> publish -> predict the test image -> export ->
download -> the downloaded model runs in ``falconet.load`` and answers as the service did.
Training budgets are seconds here; accuracy on these sets is measured in benchmarks/.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (CustomVisionErrorException, ImageFileCreateBatch,
                                                                         ImageFileCreateEntry, ImageIdCreateBatch,
                                                                         ImageIdCreateEntry, Region,
                                                                         SuggestedTagAndRegionQueryToken)
from msrest.authentication import ApiKeyCredentials

import falconet
from live_service import PREDICTION_KEY, TRAINING_KEY, Service, free_port, service  # noqa: F401 - fixture
from postgres_server import PostgresServer, postgres  # noqa: F401 - fixture

pytestmark = pytest.mark.datasets


def clients(svc: Service) -> tuple[CustomVisionTrainingClient, CustomVisionPredictionClient]:
    trainer = CustomVisionTrainingClient(svc.endpoint, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))
    predictor = CustomVisionPredictionClient(svc.endpoint, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))
    return trainer, predictor


def train_and_wait(trainer: CustomVisionTrainingClient, project_id: str, **options: Any) -> Any:
    iteration = trainer.train_project(project_id, **options)
    deadline = time.monotonic() + 900
    while iteration.status == "Training" and time.monotonic() < deadline:
        time.sleep(1)
        iteration = trainer.get_iteration(project_id, iteration.id)
    assert iteration.status == "Completed", iteration.training_error_details
    return iteration


def export_and_download(trainer: CustomVisionTrainingClient, project_id: str, iteration_id: str, platform: str,
                        out: Path, flavor: str | None = None) -> Path:
    export = trainer.export_iteration(project_id, iteration_id, platform, flavor=flavor)
    deadline = time.monotonic() + 600
    while export.status != "Done" and time.monotonic() < deadline:
        assert export.status != "Failed", export
        time.sleep(1)
        export = next(e for e in trainer.get_exports(project_id, iteration_id) if e.platform == platform and e.flavor == flavor)
    zip_path = out / f"{platform}-{flavor}.zip"
    downloaded = httpx.get(export.download_uri, timeout=60)
    assert downloaded.status_code == 200, downloaded.text
    zip_path.write_bytes(downloaded.content)
    # the link is signed under the training key: the bare path (an iteration id is not a secret) is refused
    unsigned = httpx.get(export.download_uri.partition("?")[0], timeout=60)
    assert unsigned.status_code == 403 and unsigned.json()["code"] == "UnauthorizedLinkSignature"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out / f"{platform}-{flavor}")
    return out / f"{platform}-{flavor}"


def test_classification_quickstart_on_cv_trees(real_datasets: Path, service: Service, tmp_path: Path) -> None:  # noqa: F811
    classification_quickstart(real_datasets, service, tmp_path)


def test_classification_quickstart_on_postgresql(real_datasets: Path, postgres: PostgresServer, tmp_path: Path) -> None:  # noqa: F811
    """The same session with the service's rows in a real PostgreSQL server (FALCONET_DATABASE_URL),
    the training worker process included."""
    url = postgres.new_database()
    svc = Service(tmp_path / "data", free_port(), database_url=url).start()
    try:
        classification_quickstart(real_datasets, svc, tmp_path)
    finally:
        svc.stop()
    assert not (tmp_path / "data" / "falconet.db").exists()  # nothing went to SQLite instead
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM iterations ORDER BY created")).scalars().all() == ["Completed"] * 2
    engine.dispose()


def classification_quickstart(real_datasets: Path, service: Service, tmp_path: Path) -> None:  # noqa: F811
    root = real_datasets / "cv-trees"
    trainer, predictor = clients(service)
    project = trainer.create_project("Trees")
    hemlock = trainer.create_tag(project.id, "Hemlock")
    cherry = trainer.create_tag(project.id, "Japanese Cherry")
    entries = [ImageFileCreateEntry(name=f.name, contents=f.read_bytes(), tag_ids=[tag.id])
               for tag, folder in ((hemlock, "hemlock"), (cherry, "japanese_cherry"))
               for f in sorted((root / folder).glob("*.jpg"))]
    upload = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries))
    assert upload.is_batch_successful and len(upload.images) == len(entries)

    first = train_and_wait(trainer, project.id)
    with pytest.raises(CustomVisionErrorException) as refused:
        trainer.train_project(project.id)
    assert refused.value.error.code == "BadRequestTrainingNotNeeded"
    performance = trainer.get_iteration_performance(project.id, first.id, threshold=0.5)
    assert {t.name for t in performance.per_tag_performance} == {"Hemlock", "Japanese Cherry"}
    assert 0.0 <= performance.precision <= 1.0 and 0.0 <= performance.average_precision <= 1.0
    lenient = trainer.get_iteration_performance(project.id, first.id, threshold=0.01)
    strict = trainer.get_iteration_performance(project.id, first.id, threshold=0.99)
    assert lenient.recall >= performance.recall >= strict.recall
    assert len(trainer.get_image_performances(project.id, first.id)) == len(entries)  # k-fold scores every image once

    trainer.publish_iteration(project.id, first.id, "treeClassifierModel", "/subscriptions/local/prediction")
    test_image = (root / "test" / "test_image.jpg").read_bytes()
    result = predictor.classify_image(project.id, "treeClassifierModel", test_image)
    assert {p.tag_name for p in result.predictions} == {"Hemlock", "Japanese Cherry"}
    assert sum(p.probability for p in result.predictions) == pytest.approx(1.0, abs=1e-4)
    assert {p.tag_id for p in result.predictions} == {hemlock.id, cherry.id}
    with pytest.raises(CustomVisionErrorException) as published:
        trainer.delete_iteration(project.id, first.id)
    assert published.value.error.code == "BadRequestIterationIsPublished"

    onnx_dir = export_and_download(trainer, project.id, first.id, "ONNX", tmp_path)
    local = falconet.load(onnx_dir).predict(test_image)
    assert {p.tag_name: round(p.probability, 4) for p in local} == {p.tag_name: round(p.probability, 4) for p in result.predictions}
    docker = export_and_download(trainer, project.id, first.id, "DockerFile", tmp_path, flavor="Linux")
    assert (docker / "containers" / "Dockerfile").is_file() and (docker / "model" / "model.onnx").is_file()
    assert falconet.load(docker / "model").predict(test_image)[0].tag_name == local[0].tag_name

    # The Predictions tab: the stored prediction becomes a training image with its (confirmed) tag.
    stored = trainer.query_predictions(project.id, {"orderBy": "Newest"})
    assert [r.iteration for r in stored.results] == [first.id]  # classify_image stores; nostore would not
    promoted = trainer.create_images_from_predictions(project.id, ImageIdCreateBatch(
        images=[ImageIdCreateEntry(id=stored.results[0].id, tag_ids=[result.predictions[0].tag_id])]))
    assert promoted.is_batch_successful

    # The smart labeler: an untagged photo gets suggested tags, most uncertain first.
    untagged = trainer.create_images_from_data(project.id, _smaller(test_image)).images[0].image
    suggestion = trainer.suggest_tags_and_regions(project.id, first.id, [untagged.id])[0]
    assert {p.tag_name for p in suggestion.predictions} == {"Hemlock", "Japanese Cherry"}
    assert 0.0 <= suggestion.prediction_uncertainty <= 1.0
    queried = trainer.query_suggested_images(project.id, first.id, SuggestedTagAndRegionQueryToken(
        tag_ids=[hemlock.id, cherry.id], threshold=0.0, max_count=10, sort_by="UncertaintyDescending"))
    assert [r.id for r in queried.results] == [untagged.id]

    # A second iteration on the grown workspace, compared with the first.
    second = train_and_wait(trainer, project.id)
    iterations = {i.id: i for i in trainer.get_iterations(project.id)}
    assert set(iterations) == {first.id, second.id} and iterations[first.id].publish_name == "treeClassifierModel"
    assert len(trainer.get_images(project.id, iteration_id=first.id, take=256)) == len(entries)
    assert len(trainer.get_images(project.id, iteration_id=second.id, take=256)) == len(entries) + 1
    trainer.get_iteration_performance(project.id, second.id)


def _smaller(data: bytes) -> bytes:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.thumbnail((400, 400))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_object_detection_quickstart_on_cv_fork_scissors(real_datasets: Path, service: Service, tmp_path: Path) -> None:  # noqa: F811
    root = real_datasets / "cv-fork-scissors"
    regions = json.loads((root / "regions.json").read_text())
    trainer, predictor = clients(service)
    domain = next(d for d in trainer.get_domains() if d.type == "ObjectDetection" and d.name == "General (compact)")
    project = trainer.create_project("Fork and scissors", domain_id=domain.id)
    tags = {name: trainer.create_tag(project.id, name) for name in ("fork", "scissors")}
    entries = []
    for name, tag in tags.items():
        for path in sorted((root / name).glob("*.jpg")):
            boxes = [Region(tag_id=tag.id, left=l, top=t, width=w, height=h) for l, t, w, h in regions[path.name]]
            entries.append(ImageFileCreateEntry(name=path.name, contents=path.read_bytes(), regions=boxes))
    for start in range(0, len(entries), 64):
        assert trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries[start:start + 64])).is_batch_successful
    image = trainer.get_tagged_images(project.id, take=1)[0]
    assert image.regions and 0.0 <= image.regions[0].left <= 1.0

    iteration = train_and_wait(trainer, project.id)
    performance = trainer.get_iteration_performance(project.id, iteration.id, threshold=0.1, overlap_threshold=0.3)
    assert {t.name for t in performance.per_tag_performance} == {"fork", "scissors"}
    trainer.publish_iteration(project.id, iteration.id, "detectModel", "/subscriptions/local/prediction")
    test_image = sorted((root / "test").glob("*.jpg"))[0].read_bytes()
    result = predictor.detect_image_with_no_store(project.id, "detectModel", test_image)
    assert result.predictions and all(p.bounding_box is not None for p in result.predictions)
    assert trainer.query_predictions(project.id, {}).results == []
    quick = trainer.quick_test_image(project.id, test_image, iteration_id=iteration.id, store=False)
    assert [p.tag_name for p in quick.predictions] == [p.tag_name for p in result.predictions]

    untagged = trainer.create_images_from_data(project.id, test_image).images[0].image
    proposals = trainer.get_image_region_proposals(project.id, untagged.id).proposals
    assert len(proposals) <= 20 and all(0.0 <= p.bounding_box.left <= 1.0 for p in proposals)
    assert [p.confidence for p in proposals] == sorted((p.confidence for p in proposals), reverse=True)

    onnx_dir = export_and_download(trainer, project.id, iteration.id, "ONNX", tmp_path)
    local = falconet.load(onnx_dir).predict(test_image)
    assert len(local) == len(result.predictions)
    for mine, theirs in zip(local, result.predictions):
        assert mine.tag_name == theirs.tag_name and mine.probability == pytest.approx(theirs.probability, abs=1e-5)
        assert mine.bounding_box.left == pytest.approx(theirs.bounding_box.left, abs=1e-5)
