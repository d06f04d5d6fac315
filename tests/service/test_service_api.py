"""The Training API's limits and error codes against a live ``falconet service`` (no training).

Every refusal must carry the hosted service's code and the right status, and leave nothing
half-written: a refused upload adds no image, a refused tag no tag.
"""
from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from falconet.server.service.links import link_secret, signature

from conftest import COLOURS, draw
from live_service import TRAINING_KEY, Service, shared_service  # noqa: F401 - fixture
from postgres_server import postgres  # noqa: F401 - fixture of shared_service

CLASSIFICATION_COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"
DETECTION_COMPACT = "a27d5ca5-bb19-49d8-a70a-fec086c47f5b"


def jpeg(seed: int, colour: tuple[int, int, int] = (200, 50, 50), size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def entry(data: bytes, tag_ids: list[str] | None = None, **extra: object) -> dict:
    return {"name": "x.jpg", "contents": base64.b64encode(data).decode(), "tagIds": tag_ids or [], **extra}


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body["message"]


@pytest.fixture
def api(shared_service: Service) -> httpx.Client:  # noqa: F811
    with shared_service.client() as client:
        yield client


_counter = iter(range(10_000))


def project(api: httpx.Client, domain: str = CLASSIFICATION_COMPACT, kind: str | None = None) -> dict:
    params = {"name": f"p{next(_counter)}", "domainId": domain}
    if kind:
        params["classificationType"] = kind
    answer = api.post("/projects", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_keys_and_prefixes(shared_service: Service) -> None:  # noqa: F811
    base = shared_service.endpoint
    error(httpx.get(f"{base}/customvision/v3.3/training/projects"), 401, "Unauthorized")
    error(httpx.get(f"{base}/customvision/v3.3/training/projects", headers={"Training-Key": "wrong"}), 401, "Unauthorized")
    for prefix in ("v3.0/training", "v3.3/Training", "V3.4-PREVIEW/training"):
        answer = httpx.get(f"{base}/customvision/{prefix}/domains", headers={"Training-Key": TRAINING_KEY})
        assert answer.status_code == 200 and {d["type"] for d in answer.json()} == {"Classification", "ObjectDetection"}


def test_projects_and_tags_refuse_what_the_reference_refuses(api: httpx.Client) -> None:
    error(api.post("/projects", params={"name": ""}), 400, "BadRequestProjectName")
    error(api.post("/projects", params={"name": "x", "domainId": "00000000-0000-0000-0000-000000000000"}), 400,
          "BadRequestProjectUnknownDomain")
    error(api.post("/projects", params={"name": "x", "classificationType": "Both"}), 400,
          "BadRequestProjectUnknownClassification")
    p = project(api)
    error(api.post("/projects", params={"name": p["name"]}), 400, "BadRequestProjectNameNotUnique")
    error(api.get("/projects/does-not-exist"), 404, "NotFoundProject")
    error(api.patch(f"/projects/{p['id']}", json={"settings": {"domainId": DETECTION_COMPACT}}), 400,
          "BadRequestProjectUnsupportedDomainTypeChange")
    assert api.patch(f"/projects/{p['id']}", json={"settings": {"classificationType": "Multilabel"}}).json()[
        "settings"]["classificationType"] == "Multilabel"

    api.post(f"/projects/{p['id']}/tags", params={"name": "cat"}).raise_for_status()
    error(api.post(f"/projects/{p['id']}/tags", params={"name": "CAT"}), 400, "BadRequestTagNameNotUnique")
    api.post(f"/projects/{p['id']}/tags", params={"name": "none", "type": "Negative"}).raise_for_status()
    error(api.post(f"/projects/{p['id']}/tags", params={"name": "nothing", "type": "Negative"}), 400,
          "BadRequestMultipleNegativeTag")
    assert [t["name"] for t in api.get(f"/projects/{p['id']}/tags").json()] == ["cat", "none"]
    error(api.get(f"/projects/{p['id']}/tags/not-a-tag"), 404, "NotFoundTag")


def test_the_project_list_shows_each_project_newest_image(api: httpx.Client) -> None:
    pictured, empty = project(api), project(api)
    for seed in (500, 501):  # two requests: the second image is the newer one
        made = api.post(f"/projects/{pictured['id']}/images/files", json={"images": [entry(jpeg(seed))]}).json()
    newest = made["images"][0]["image"]["thumbnailUri"]
    listed = {p["id"]: p["thumbnailUri"] for p in api.get("/projects").json()}
    assert listed[pictured["id"]] == newest and listed[empty["id"]] is None
    assert api.get(f"/projects/{pictured['id']}").json()["thumbnailUri"] == newest


def test_partial_batch_answers_207_with_a_status_per_image(api: httpx.Client, tmp_path: Path) -> None:
    p = project(api)
    cat = api.post(f"/projects/{p['id']}/tags", params={"name": "cat"}).json()["id"]
    negative = api.post(f"/projects/{p['id']}/tags", params={"name": "Negative", "type": "Negative"}).json()["id"]
    good, again = jpeg(1), jpeg(2)
    api.post(f"/projects/{p['id']}/images/files", json={"images": [entry(again, [cat])]}).raise_for_status()
    big = np.random.default_rng(0).integers(0, 256, (1900, 1900, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    assert buffer.tell() > 6 * 1024 * 1024
    tall = io.BytesIO()
    Image.new("RGB", (20, 600)).save(tall, format="PNG")
    batch = [entry(good, [cat]), entry(b"just some text"), entry(buffer.getvalue()), entry(again, [cat]),
             entry(jpeg(3), ["not-a-tag"]), entry(jpeg(4), [cat, negative]), entry(tall.getvalue())]
    answer = api.post(f"/projects/{p['id']}/images/files", json={"images": batch})
    assert answer.status_code == 207
    body = answer.json()
    assert body["isBatchSuccessful"] is False
    assert [i["status"] for i in body["images"]] == ["OK", "ErrorImageFormat", "ErrorImageSize", "OKDuplicate",
                                                     "ErrorInvalidTag", "ErrorNegativeAndRegularTagOnSameImage",
                                                     "ErrorImageDimensions"]
    assert body["images"][0]["image"]["tags"][0]["tagName"] == "cat"
    assert "the limit is 6 MB" in body["images"][2]["message"]
    assert api.get(f"/projects/{p['id']}/images/count").json() == 2  # nothing else was written
    error(api.post(f"/projects/{p['id']}/images/files", json={"images": [entry(jpeg(9))] * 65}), 400, "BadRequestImageBatch")

    # Raw bytes and multipart batches, as the SDK's create_images_from_data sends them.
    raw = api.post(f"/projects/{p['id']}/images", params={"tagIds": cat}, content=jpeg(5),
                   headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 200 and raw.json()["images"][0]["status"] == "OK"
    files = [("imageData", (f"{i}.jpg", jpeg(10 + i))) for i in range(3)]
    multi = api.post(f"/projects/{p['id']}/images", params={"tagIds": cat}, files=files)
    assert multi.status_code == 200 and [i["status"] for i in multi.json()["images"]] == ["OK"] * 3
    assert api.get(f"/projects/{p['id']}/images/tagged/count").json() == 6
    assert api.get(f"/projects/{p['id']}/images/untagged/count").json() == 0


def test_tags_regions_and_paging(api: httpx.Client) -> None:
    p = project(api, DETECTION_COMPACT)
    assert p["settings"]["classificationType"] is None
    knife = api.post(f"/projects/{p['id']}/tags", params={"name": "knife"}).json()["id"]
    box = {"tagId": knife, "left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4}
    made = api.post(f"/projects/{p['id']}/images/files", json={"images": [entry(jpeg(20 + i), regions=[box]) for i in range(5)]
                                                                + [entry(jpeg(40))]}).json()
    ids = [i["image"]["id"] for i in made["images"]]
    assert made["images"][0]["image"]["regions"][0]["left"] == pytest.approx(0.1)
    assert api.get(f"/projects/{p['id']}/images/untagged/count").json() == 1
    page = api.get(f"/projects/{p['id']}/images", params={"take": 2, "skip": 1, "orderBy": "Oldest"}).json()
    assert [i["id"] for i in page] == ids[1:3]
    outside = {**box, "imageId": ids[5], "left": 0.9, "width": 0.5}
    error(api.post(f"/projects/{p['id']}/images/regions", json={"regions": [outside]}), 400, "BadRequestImageRegions")
    added = api.post(f"/projects/{p['id']}/images/regions", json={"regions": [{**box, "imageId": ids[5]}] * 2}).json()
    assert len(added["created"]) == 1 and len(added["duplicated"]) == 1
    too_many = [{"name": "many.jpg", "contents": base64.b64encode(jpeg(41)).decode(), "regions": [box] * 301}]
    assert api.post(f"/projects/{p['id']}/images/files", json={"images": too_many}).json()["images"][0]["status"] == \
        "ErrorRegionLimitExceed"
    api.delete(f"/projects/{p['id']}/images/regions", params={"regionIds": added["created"][0]["regionId"]}).raise_for_status()
    assert api.get(f"/projects/{p['id']}/images/untagged/count").json() == 1  # the tag left with its last box
    cls = project(api)
    tag = api.post(f"/projects/{cls['id']}/tags", params={"name": "a"}).json()["id"]
    image = api.post(f"/projects/{cls['id']}/images/files", json={"images": [entry(jpeg(50))]}).json()["images"][0]["image"]["id"]
    summary = api.post(f"/projects/{cls['id']}/images/tags", json={"tags": [{"imageId": image, "tagId": tag}] * 2}).json()
    assert len(summary["created"]) == 1 and len(summary["duplicated"]) == 1
    api.delete(f"/projects/{cls['id']}/images/tags", params={"imageIds": image, "tagIds": tag}).raise_for_status()
    assert api.get(f"/projects/{cls['id']}/images/untagged/count").json() == 1
    api.delete(f"/projects/{cls['id']}/images", params={"imageIds": image}).raise_for_status()
    assert api.get(f"/projects/{cls['id']}/images/count").json() == 0


def test_training_is_refused_with_the_reference_codes(api: httpx.Client) -> None:
    p = project(api)
    a = api.post(f"/projects/{p['id']}/tags", params={"name": "a"}).json()["id"]
    b = api.post(f"/projects/{p['id']}/tags", params={"name": "b"}).json()["id"]
    api.post(f"/projects/{p['id']}/images/files", json={"images": [entry(jpeg(60 + i), [a]) for i in range(5)]
                                                       + [entry(jpeg(70 + i), [b]) for i in range(4)]}).raise_for_status()
    message = error(api.post(f"/projects/{p['id']}/train"), 400, "BadRequestMultiClassClassificationTrainingValidationFailed")
    assert "b (4)" in message
    error(api.post(f"/projects/{p['id']}/train", params={"trainingType": "Advanced"}), 400,
          "BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining")
    assert api.get(f"/projects/{p['id']}/iterations").json() == []

    od = project(api, DETECTION_COMPACT)
    fork = api.post(f"/projects/{od['id']}/tags", params={"name": "fork"}).json()["id"]
    neg = api.post(f"/projects/{od['id']}/tags", params={"name": "Negative", "type": "Negative"}).json()["id"]
    box = {"tagId": fork, "left": 0.1, "top": 0.1, "width": 0.5, "height": 0.5}
    api.post(f"/projects/{od['id']}/images/files", json={"images": [entry(jpeg(80 + i), regions=[box]) for i in range(15)]
                                                        + [entry(jpeg(99), [neg])]}).raise_for_status()
    error(api.post(f"/projects/{od['id']}/train"), 400, "BadRequestDetectionTrainingNotAllowNegativeTag")
    error(api.get(f"/projects/{od['id']}/iterations/{'0' * 8}"), 404, "NotFoundIteration")
    error(api.post(f"/projects/{od['id']}/quicktest/image", content=jpeg(1)), 400, "BadRequestIterationIsNotTrained")


def test_concurrent_uploads_store_each_image_once(api: httpx.Client, shared_service: Service) -> None:  # noqa: F811
    p = project(api)
    tag = api.post(f"/projects/{p['id']}/tags", params={"name": "t"}).json()["id"]
    images = [jpeg(200 + i) for i in range(12)]
    statuses: list[str] = []
    lock = threading.Lock()

    def upload(chunk: list[bytes]) -> None:
        with shared_service.client() as client:
            body = client.post(f"/projects/{p['id']}/images/files", json={"images": [entry(d, [tag]) for d in chunk]}).json()
        with lock:
            statuses.extend(i["status"] for i in body["images"])

    # Four clients, each sending every image: each picture must land exactly once.
    threads = [threading.Thread(target=upload, args=(images[i:] + images[:i],)) for i in (0, 3, 6, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count("OK") == 12 and statuses.count("OKDuplicate") == 36
    assert api.get(f"/projects/{p['id']}/images/count").json() == 12
    assert api.get(f"/projects/{p['id']}/tags").json()[0]["imageCount"] == 12


def test_image_files_are_served_and_partial_writes_are_cleaned(api: httpx.Client, shared_service: Service) -> None:  # noqa: F811
    p = project(api)
    made = api.post(f"/projects/{p['id']}/images/files", json={"images": [entry(jpeg(300))]}).json()["images"][0]["image"]
    original = httpx.get(made["originalImageUri"])
    assert original.status_code == 200 and original.content == jpeg(300)
    thumb = Image.open(io.BytesIO(httpx.get(made["thumbnailUri"]).content))
    assert max(thumb.size) <= 200
    # the links are signed (the service has a training key): without or with a wrong signature a
    # link is refused before the file is looked up, so it cannot tell which photos are stored
    unsigned, _, signed_query = made["originalImageUri"].partition("?")
    assert signed_query.startswith("sig=")
    error(httpx.get(unsigned), 403, "UnauthorizedLinkSignature")
    error(httpx.get(unsigned + "?sig=" + "0" * 32), 403, "UnauthorizedLinkSignature")
    missing = "/falconet/blobs/" + "0" * 64 + ".jpg"
    error(httpx.get(f"{shared_service.endpoint}{missing}?sig=" + signed_query[4:]), 403, "UnauthorizedLinkSignature")
    error(httpx.get(f"{shared_service.endpoint}{missing}?sig=" + signature(link_secret(TRAINING_KEY), missing)), 404, "NotFoundImage")
    assert COLOURS and draw  # the shared helpers stay importable from here


def test_without_keys_the_service_refuses_to_leave_loopback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("FALCONET_TRAINING_KEY", "FALCONET_PREDICTION_KEY")}
    done = subprocess.run([sys.executable, "-m", "falconet.cli", "service", "--data-dir", str(tmp_path), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "loopback" in done.stderr
    assert not (tmp_path / "falconet.db").exists()  # refused before anything was created


def test_images_from_urls_report_each_source(api: httpx.Client) -> None:
    import http.server

    photo = jpeg(400)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path != "/photo.jpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(photo)))
            self.end_headers()
            self.wfile.write(photo)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        p = project(api)
        tag = api.post(f"/projects/{p['id']}/tags", params={"name": "t"}).json()["id"]
        answer = api.post(f"/projects/{p['id']}/images/urls", json={"images": [{"url": f"{base}/photo.jpg"},
                                                                              {"url": f"{base}/missing.jpg"}],
                                                                   "tagIds": [tag]})
        assert answer.status_code == 207
        assert [(i["sourceUrl"], i["status"]) for i in answer.json()["images"]] == [
            (f"{base}/photo.jpg", "OK"), (f"{base}/missing.jpg", "ErrorSource")]
        stored = httpx.get(answer.json()["images"][0]["image"]["originalImageUri"]).content
        assert stored == photo
    finally:
        server.shutdown()
