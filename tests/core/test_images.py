import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falconet.core.errors import ImageTooLargeError, ImageTooSmallError, InvalidImageError
from falconet.core.images import image_format, load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that *claims* width x height with almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _jpeg(size=(40, 30), colour=(200, 10, 10), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", **save)
    return buf.getvalue()


def test_inputs_of_every_kind_give_the_same_rgb(tmp_path: Path) -> None:
    data = _jpeg()
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_path = np.asarray(load_image(path))
    assert from_path.shape == (30, 40, 3)
    assert np.array_equal(np.asarray(load_image(data)), from_path)
    assert np.array_equal(np.asarray(load_image(Image.open(io.BytesIO(data)))), from_path)
    assert np.array_equal(np.asarray(load_image(from_path.copy())), from_path)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    upright = load_image(buf.getvalue())
    assert upright.size == (20, 40)
    top = np.asarray(upright)[:5].mean()
    bottom = np.asarray(upright)[-5:].mean()
    assert top > 200 and bottom < 60  # the left stripe is now at the top


def test_modes_become_rgb() -> None:
    for mode in ("L", "RGBA", "P", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (20, 20)).save(buf, "PNG")
        assert load_image(buf.getvalue()).mode == "RGB"


@pytest.mark.parametrize("data", [b"", b"not an image at all", _jpeg()[:200]])
def test_bad_bytes_are_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImageError) as info:
        load_image(data)
    assert info.value.status == 400


def test_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(30000, 30000))


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageTooSmallError):
        load_image(_jpeg(size=(8, 8)))


def test_array_validation() -> None:
    with pytest.raises(InvalidImageError):
        load_image(np.zeros((20, 20, 3), dtype=np.float32))
    assert load_image(np.zeros((20, 20), dtype=np.uint8)).mode == "RGB"


def test_format_comes_from_content(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "PNG")
    lying = tmp_path / "x.jpg"
    lying.write_bytes(buf.getvalue())
    assert image_format(lying) == "PNG"
    (tmp_path / "t.jpg").write_text("hello")
    assert image_format(tmp_path / "t.jpg") is None
