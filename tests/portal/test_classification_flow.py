"""The classification flow in a real browser: create -> upload cv-trees (picker and drop) -> tag -> train ->
performance with the slider -> quick test -> publish -> export ONNX and download."""
from __future__ import annotations

import base64
import json
import re
import zipfile
from pathlib import Path

import httpx
import pytest

from portal_fixtures import PREDICTION_KEY, assert_accessible, browser, open_portal, page, portal_service, shot  # noqa: F401 (fixtures)

DROP_FILES = """(files) => {
  const dt = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], f.name, { type: f.type }));
  }
  return dt;
}"""


def drop(page, selector: str, files: list[Path], mime: str = "image/jpeg") -> None:
    payload = [{"name": f.name, "b64": base64.b64encode(f.read_bytes()).decode(), "type": mime} for f in files]
    handle = page.evaluate_handle(DROP_FILES, payload)
    page.dispatch_event(selector, "drop", {"dataTransfer": handle})


def test_classification_flow(page, portal_service, real_datasets: Path, tmp_path: Path) -> None:
    trees = real_datasets / "cv-trees"
    hemlock = sorted((trees / "hemlock").glob("*.jpg"))
    cherry = sorted((trees / "japanese_cherry").glob("*.jpg"))
    open_portal(page, portal_service)

    # Create the project: the domain list comes from the API with each domain's description.
    page.get_by_label("Name").fill("Trees")
    page.get_by_label("Description").fill("Hemlock or Japanese cherry")
    page.get_by_label("Project type").select_option("Multiclass")
    assert "EfficientNet" in page.locator("#domain-help").inner_text() or page.locator("#domain-help").inner_text()
    page.get_by_role("button", name="Create project").click()
    page.get_by_role("heading", name="Trees").wait_for()

    # Hemlock through the file picker with a new tag; the cherries (and one duplicate) dropped with another.
    page.get_by_label("New tag for these photos (optional)").fill("hemlock")
    page.locator("#upload-files").set_input_files([str(f) for f in hemlock])
    page.wait_for_selector("#upload-status:has-text('Done')")
    assert page.locator("#upload-results li.ok").count() == len(hemlock)
    page.get_by_label("New tag for these photos (optional)").fill("japanese_cherry")
    drop(page, "#dropzone", cherry + hemlock[:1])
    page.wait_for_selector(f"#upload-status:has-text('Done: {len(cherry)} accepted, 1 not added')")
    assert page.locator("#upload-results li.ok").count() == len(cherry) + 1
    assert "duplicate" in page.locator("#upload-results li[data-status=OKDuplicate]").inner_text()

    page.get_by_label("Show").select_option(label=f"Tag: hemlock ({len(hemlock)})")
    page.wait_for_selector(f"#gallery-count:has-text('{len(hemlock)} photo(s)')")
    page.get_by_label("Show").select_option("all")
    page.wait_for_selector(f"#gallery-count:has-text('{len(hemlock) + len(cherry)} photo(s)')")
    page.reload()
    page.wait_for_selector("#gallery .tile img")
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every((i) => i.complete)")
    shot(page, "classification-project", readme="project", height=1100)
    assert_accessible(page)

    # Train (quick) and wait for the iteration, watching the progress on the page.
    page.get_by_role("link", name="Train & iterations").click()
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_selector("#training-status:has-text('training')", timeout=20_000)
    page.wait_for_selector("#open-performance", timeout=240_000)
    page.locator("#open-performance").click()

    # Performance: moving the threshold re-queries the API and changes the figures.
    page.wait_for_selector("#fig-precision")
    page.wait_for_selector("#pr-curve path")
    assert page.locator("#confusion tbody tr").count() == 2
    before = page.locator("#fig-precision").inner_text()
    page.locator("#threshold").fill("0")
    page.wait_for_selector("#threshold-value:has-text('0%')")
    page.wait_for_function("(b) => document.querySelector('#fig-precision').textContent !== b", arg=before)
    assert page.locator("#fig-precision").inner_text() == "50.0%"  # every tag predicted for every photo
    page.locator("#threshold").fill("0.5")
    page.wait_for_function("(b) => document.querySelector('#fig-precision').textContent === b", arg=before)
    assert page.locator("#per-tag tbody tr").count() == 2
    shot(page, "classification-performance", readme="performance", height=1150)
    assert_accessible(page)

    # Quick test the dataset's test photo.
    page.get_by_role("link", name="Quick test").first.click()
    page.locator("#qt-file").set_input_files(str(trees / "test" / "test_image.jpg"))
    page.wait_for_selector("#qt-tags tbody tr")
    text = page.locator("#qt-tags").inner_text()
    assert "hemlock" in text and "japanese_cherry" in text and re.search(r"\d+\.\d%", text)
    shot(page, "classification-quicktest")
    # A loopback address is refused by the service's URL policy: the reason is shown in words.
    page.get_by_label("Or a photo's web address").fill(f"{portal_service.endpoint}/healthz")
    page.get_by_role("button", name="Test URL").click()
    page.wait_for_selector("#notice:not(:empty)")
    assert "{" not in page.locator("#notice").inner_text()

    # Publish: the snippets are shown, and the prediction URL really answers with the prediction key.
    page.get_by_role("link", name="Publish & export").click()
    page.get_by_label("Name", exact=True).fill("trees")
    page.get_by_role("button", name="Publish", exact=True).click()
    page.wait_for_selector("#curl-snippet")
    url = page.locator("#prediction-url").inner_text()
    assert "Prediction-Key" in page.locator("#curl-snippet").inner_text()
    assert "requests.post" in page.locator("#python-snippet").inner_text()
    answer = httpx.post(url, content=(trees / "test" / "test_image.jpg").read_bytes(),
                        headers={"Prediction-Key": PREDICTION_KEY, "Content-Type": "application/octet-stream"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["predictions"]
    shot(page, "classification-publish")

    # Export ONNX, see the parity figures from the zip's manifest, download it.
    page.get_by_label("Format").select_option(label="ONNX (fp32)")
    page.get_by_role("button", name="Export", exact=True).click()
    page.wait_for_selector("#parity table", timeout=240_000)
    assert "onnx" in page.locator("#parity").inner_text().lower()
    with page.expect_download() as info:
        page.locator("tr[data-export='ONNX'] a", has_text="Download").click()
    saved = tmp_path / "onnx.zip"
    info.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(next(n for n in names if n.endswith("manifest.json"))))
    assert any(n.endswith(".onnx") for n in names)
    assert manifest["exports"]
    shot(page, "classification-export")
    assert_accessible(page)

    page.get_by_role("button", name="Unpublish trees").click()
    page.wait_for_selector("#published:has-text('Nothing is published yet')")

    # Predictions tab: the photo sent to the prediction URL above was stored; add it with a corrected tag.
    page.get_by_role("link", name="Predictions").click()
    page.wait_for_selector("#stored .tile")
    page.locator("#stored .tile select").first.select_option(label="hemlock")
    page.get_by_role("button", name="Add chosen to the training set").click()
    page.wait_for_selector("text=Added 1 of 1")

    # Smart labeler: an untagged photo gets a suggestion, confirmed in bulk.
    from PIL import Image, ImageOps

    mirrored = tmp_path / "mirrored_cherry.jpg"
    with Image.open(cherry[0]) as image:
        ImageOps.mirror(image).save(mirrored)
    with portal_service.client() as api:
        pid = page.url.split("/projects/")[1].split("/")[0]
        added = api.post(f"/projects/{pid}/images", content=mirrored.read_bytes(),
                         headers={"Content-Type": "application/octet-stream"}).json()
        image_id = added["images"][0]["image"]["id"]
    page.get_by_role("button", name="Suggest tags for untagged photos").click()
    page.wait_for_selector("#smart-confirm:not([disabled])")
    page.get_by_role("button", name="Confirm checked suggestions").click()
    page.wait_for_selector("#notice:has-text('Confirmed 1 suggestion')")
    with portal_service.client() as api:
        tags = api.get(f"/projects/{pid}/images/id", params={"imageIds": image_id}).json()[0]["tags"]
    assert tags and len(tags) == 1
    shot(page, "classification-predictions")
    assert_accessible(page)
