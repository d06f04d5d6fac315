"""What a person sees when things go wrong: a refused key, a text file uploaded, training with too few photos."""
from __future__ import annotations

from pathlib import Path

from conftest import draw  # the root conftest's image drawer
from portal_fixtures import TRAINING_KEY, assert_accessible, browser, open_portal, page, portal_service, shot  # noqa: F401 (fixtures)


def test_wrong_key_is_refused_in_words(page, portal_service) -> None:
    page.goto(f"{portal_service.endpoint}/")
    page.get_by_label("Training key").fill("not-the-key")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#notice:has-text('training key was refused')")
    page.get_by_label("Training key").fill(TRAINING_KEY)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Projects").wait_for()


def test_text_file_and_too_few_photos(page, portal_service, tmp_path: Path) -> None:
    with portal_service.client() as api:
        pid = api.post("/projects", params={"name": "Too small"}).json()["id"]
    open_portal(page, portal_service, f"/projects/{pid}/images")
    notes = tmp_path / "notes.txt"
    notes.write_text("these are not photos\n")
    page.locator("#upload-files").set_input_files(str(notes))
    page.wait_for_selector("#upload-results li[data-status=ErrorImageFormat]")
    assert "not an image" in page.locator("#upload-results li.bad").inner_text()
    shot(page, "error-text-file")

    photos = [draw(tmp_path / f"{colour}.png", rgb, seed) for seed, (colour, rgb) in
              enumerate([("red", (220, 30, 30)), ("blue", (30, 30, 220))])]
    page.locator("#upload-files").set_input_files([str(p) for p in photos])
    page.wait_for_selector("#upload-status:has-text('Done: 2 accepted')")
    page.get_by_label("Show").select_option("untagged")
    page.wait_for_selector("#gallery-count:has-text('2 photo(s)')")
    for tag in ("red", "blue"):  # tag the photos later, one by one, through the selection
        page.locator("#gallery .tile .check").first.check()
        page.get_by_label("New tag", exact=True).fill(tag)
        page.get_by_role("button", name="Tag selected").click()
        page.wait_for_selector(f"#notice:has-text('Tagged 1 photo')")
    page.wait_for_selector("#gallery:has-text('No photos here yet')")
    page.get_by_role("link", name="Train & iterations").click()
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_selector("#notice:has-text('at least')")
    text = page.locator("#notice").inner_text()
    assert "images" in text and "{" not in text, text
    assert page.locator("#iterations").is_visible()
    shot(page, "error-too-few")

    # Select everything and delete it.
    page.get_by_role("link", name="Images").click()
    page.get_by_role("button", name="Select all shown").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete selected").click()
    page.wait_for_selector("#notice:has-text('Deleted 2 photo')")
    page.wait_for_selector("#gallery-count:has-text('0 photo(s)')")

    # Delete the project; then its address shows the API's refusal in words, with a way back, not a blank page.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this project").click()
    page.get_by_role("heading", name="Projects").wait_for()
    assert page.locator("[data-project='Too small']").count() == 0
    page.goto(f"{portal_service.endpoint}/portal/#/projects/{pid}/images")
    page.wait_for_selector("#notice:not(:empty)")
    assert pid in page.locator("#notice").inner_text() or "not" in page.locator("#notice").inner_text().lower()
    assert page.get_by_role("link", name="Back to the projects").is_visible()


def test_tablet_and_keyboard(browser, portal_service) -> None:
    """On a tablet-sized screen the pages fit; the create form works from the keyboard alone with a visible focus."""
    context = browser.new_context(viewport={"width": 820, "height": 1180}, has_touch=True)
    page = context.new_page()
    try:
        open_portal(page, portal_service)
        assert_accessible(page)
        page.locator(".skip").focus()
        assert page.locator(".skip").bounding_box()["x"] >= 0  # shown when focused
        page.keyboard.press("Enter")  # the skip link moves the focus to the content
        assert page.evaluate("() => document.activeElement.id") == "main"
        page.get_by_label("Name").focus()
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"
        page.keyboard.type("Keyboard only")
        page.get_by_label("Project type").focus()
        page.keyboard.press("Tab")  # domain
        page.keyboard.press("Tab")  # create
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Keyboard only").wait_for()
        assert_accessible(page)
        shot(page, "tablet-project")
    finally:
        context.close()
