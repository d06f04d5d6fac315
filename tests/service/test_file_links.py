"""Signed file links: what the SDK's image and export URIs carry, checked without a server."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from falconet.server.service.links import FileLinks, link_secret, signature_valid

SHA = "ab" * 32


def _path_and_sig(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query).get("sig", [None])[0]


def test_a_service_without_a_training_key_hands_out_plain_links() -> None:
    links = FileLinks("http://h:1", link_secret(None))
    assert links.image(SHA, "jpg") == {"resizedImageUri": f"http://h:1/falconet/blobs/{SHA}.jpg?size=resized",
                                       "thumbnailUri": f"http://h:1/falconet/blobs/{SHA}.jpg?size=thumbnail",
                                       "originalImageUri": f"http://h:1/falconet/blobs/{SHA}.jpg"}
    assert signature_valid(None, f"/falconet/blobs/{SHA}.jpg", None)


def test_signed_links_verify_for_their_own_path_and_key_only() -> None:
    secret = link_secret("key-one")
    links = FileLinks("http://h:1", secret)
    urls = [*links.image(SHA, "png").values(), links.thumbnail(f"{SHA}.png"), links.export("it-1", "ONNX.zip")]
    for url in urls:
        path, sig = _path_and_sig(url)
        assert sig is not None and len(sig) == 32
        assert signature_valid(secret, path, sig)
        assert not signature_valid(link_secret("key-two"), path, sig)  # a new training key retires old links
        assert not signature_valid(secret, path[:-1] + ("x" if path[-1] != "x" else "y"), sig)
        assert not signature_valid(secret, path, None)
    # the size variants of one image share the signature of its path: the query is not signed
    assert len({_path_and_sig(u)[1] for u in links.image(SHA, "png").values()}) == 1
    # host-relative links (cached, the host added per request) sign the same path
    assert FileLinks("", secret).export("it-1", "ONNX.zip") == links.export("it-1", "ONNX.zip").removeprefix("http://h:1")
