"""Links to stored files (images, export zips) that clients fetch without the Training-Key header.

The SDK's ``originalImageUri`` / ``downloadUri`` and the portal's ``<img>`` tags are plain GETs
that carry no headers, so the hosted service hands out signed storage URLs. Falconet does the same
when the service has a training key: each link carries ``sig``, an HMAC of the file's name under a
secret derived from that key. Without it, a blob's name (the SHA-256 of its bytes) would let anyone
who holds a photo ask whether the service stores it, and an iteration id alone would fetch a model.
Changing the training key invalidates every link handed out before. A service without a training
key is open to everybody anyway, and its links carry no signature.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional

#: characters of the hex HMAC kept in a link (128 bits)
SIGNATURE_CHARS = 32
BLOBS = "/falconet/blobs"
EXPORTS = "/falconet/exports"


def link_secret(training_key: Optional[str]) -> Optional[bytes]:
    """The signing secret of a service whose training key is ``training_key`` (None: links are open)."""
    if training_key is None:
        return None
    return hmac.new(training_key.encode("utf-8"), b"falconet file links v1", hashlib.sha256).digest()


def signature(secret: bytes, path: str) -> str:
    return hmac.new(secret, path.encode("utf-8"), hashlib.sha256).hexdigest()[:SIGNATURE_CHARS]


def signature_valid(secret: Optional[bytes], path: str, given: Optional[str]) -> bool:
    """Whether ``given`` signs ``path`` (the URL path, without host or query); always true when open."""
    if secret is None:
        return True
    return given is not None and hmac.compare_digest(given.encode("utf-8"), signature(secret, path).encode("utf-8"))


@dataclass(frozen=True)
class FileLinks:
    """Absolute (or, with ``base=""``, host-relative) links as one request's client should see them."""

    base: str
    secret: Optional[bytes]

    def _signed(self, path: str, *queries: str) -> list[str]:
        """``path`` once per query ("" for none), all with the one signature of ``path``."""
        sig = f"sig={signature(self.secret, path)}" if self.secret is not None else ""
        urls = []
        for query in queries:
            params = "&".join(p for p in (query, sig) if p)
            urls.append(self.base + path + ("?" + params if params else ""))
        return urls

    def image(self, sha256: str, fmt: str) -> dict[str, str]:
        """The Training API's three image URIs."""
        resized, thumbnail, original = self._signed(f"{BLOBS}/{sha256}.{fmt}", "size=resized", "size=thumbnail", "")
        return {"resizedImageUri": resized, "thumbnailUri": thumbnail, "originalImageUri": original}

    def thumbnail(self, name: str) -> str:
        return self._signed(f"{BLOBS}/{name}", "size=thumbnail")[0]

    def export(self, iteration_id: str, name: str) -> str:
        return self._signed(f"{EXPORTS}/{iteration_id}/{name}", "")[0]
