"""Fixtures for the portal tests: a live ``falconet service`` and Debian's Chromium driven by Playwright.

Not a conftest.py: the other test folders import the root ``conftest`` by name, so this folder must not
define another module called conftest. Test modules import these fixtures by name; the service and the
browser are started once per test session and closed at exit.

Screenshots of the key pages go to ``test-artifacts/portal/`` (not committed). With
``FALCONET_README_SCREENSHOTS=1`` the README's screenshots in ``docs/screenshots/`` are refreshed too.
"""
from __future__ import annotations

import atexit
import io
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from live_service import PREDICTION_KEY, TRAINING_KEY, Service, free_port  # noqa: E402

CHROMIUM = Path(os.environ.get("FALCONET_CHROMIUM", "/usr/bin/chromium"))  # Debian's; never a downloaded browser
ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "portal"
README_SHOTS = ROOT / "docs" / "screenshots"

__all__ = ["PREDICTION_KEY", "TRAINING_KEY", "Service", "shot", "open_portal"]


_shared: dict[str, object] = {}


@pytest.fixture(scope="session")
def portal_service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    if "service" not in _shared:
        svc = Service(tmp_path_factory.mktemp("portal") / "data", free_port()).start()
        atexit.register(svc.stop)
        _shared["service"] = svc
    return _shared["service"]


@pytest.fixture(scope="session")
def browser() -> object:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium); the portal tests need a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    if "browser" not in _shared:
        playwright = sync_api.sync_playwright().start()
        _shared["browser"] = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])

        def close() -> None:
            _shared["browser"].close()
            playwright.stop()
        atexit.register(close)
    return _shared["browser"]


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the portal: {errors}"


def open_portal(page: object, service: Service, hash_: str = "") -> None:
    """Opens the portal and answers its key prompt (the test service requires a training key)."""
    page.goto(f"{service.endpoint}/")
    page.get_by_label("Training key").fill(TRAINING_KEY)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("heading", name="Projects").wait_for()
    if hash_:
        page.goto(f"{service.endpoint}/portal/#{hash_}")


def shot(page: object, name: str, readme: str | None = None, height: int | None = None) -> Path:
    """Saves a screenshot as a test artifact (and, when asked, as a README screenshot under 200 KB)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if height:
        page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height})
    else:
        page.screenshot(path=str(path))
    if readme and os.environ.get("FALCONET_README_SCREENSHOTS") == "1":
        from PIL import Image

        README_SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((1100, 1100))
            small = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=True)
        (README_SHOTS / f"{readme}.png").write_bytes(buffer.getvalue())
    return path


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((n) => n.type !== 'hidden' && !n.closest('[hidden]'))
  .filter((n) => {
    const named = (n.labels && n.labels.length) || n.getAttribute('aria-label') || n.getAttribute('aria-labelledby')
      || (n.tagName === 'BUTTON' && n.textContent.trim());
    return !named;
  })
  .map((n) => n.outerHTML.slice(0, 120))"""


def assert_accessible(page: object) -> None:
    """Every control on the page has a name a screen reader can say, and the page does not scroll sideways."""
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
