"""The web portal: static files (HTML, CSS, JavaScript modules) served by ``falconet service``.

No build step: the browser loads the modules as they are, and the portal talks to the same
Training and Prediction APIs as the SDK, so it has no private back door into the service.
"""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
