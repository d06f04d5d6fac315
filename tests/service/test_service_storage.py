"""The storage under the service: migrations, the content-addressed store, upload checks."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from sqlalchemy import create_engine, inspect

from falconet.server.service import db
from falconet.server.service.ingest import CheckedImage, Refusal, check_image
from falconet.server.service.store import LocalImageStore


def test_an_older_database_is_migrated_forward(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        db.schema_migrations.create(conn)
        db.MIGRATIONS[0][2](conn)
        conn.execute(db.schema_migrations.insert().values(version=1, name="initial tables", applied=db.now()))
    migrated = db.connect(url)
    assert db.schema_version(migrated) == db.MIGRATIONS[-1][0]
    assert db.migrate(migrated) == []  # applying again changes nothing
    assert {"projects", "images", "iterations", "exports"} <= set(inspect(migrated).get_table_names())


def test_the_store_writes_whole_files_only(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    sha = store.put(b"abc", "jpg")
    assert store.read(sha, "jpg") == b"abc" and store.put(b"abc", "jpg") == sha
    leftover = store.path(sha, "jpg").parent / ".part-crashed"
    leftover.write_bytes(b"half")
    assert store.remove_partial_writes() == 1 and not leftover.exists()
    assert [p.name for p in store.path(sha, "jpg").parent.iterdir()] == [f"{sha}.jpg"]


def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_upload_checks_follow_the_reference_limits() -> None:
    ok = check_image(_encoded((300, 200), "PNG"))
    assert isinstance(ok, CheckedImage) and (ok.width, ok.height, ok.extension) == (300, 200, "png")
    cases = {"ErrorImageFormat": _encoded((64, 64), "TIFF"), "ErrorImageDimensions": _encoded((1300, 50), "PNG")}
    for status, data in cases.items():
        refused = check_image(data)
        assert isinstance(refused, Refusal) and refused.status == status, refused
    assert check_image(b"x" * 100, max_bytes=50).status == "ErrorImageSize"  # type: ignore[union-attr]
    assert check_image(_encoded((300, 200), "JPEG")[:200]).status == "ErrorImageFormat"  # type: ignore[union-attr]
