"""The repository under the Training API, in process: how many queries a request costs, and
inserts that must tolerate a row already there on every database the URL may name."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from sqlalchemy import event, func, select
from sqlalchemy.dialects import postgresql

from falconet.server.service import db
from falconet.server.service.ingest import check_image
from falconet.server.service.repository import Repository, Upload
from falconet.server.service.settings import open_storage

from postgres_server import postgres  # noqa: F401 - fixture

CLASSIFICATION_COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"
DETECTION_COMPACT = "a27d5ca5-bb19-49d8-a70a-fec086c47f5b"


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Repository]:
    """The repository on each database the service's URL may name (PostgreSQL: a real server)."""
    if request.param == "postgresql":
        monkeypatch.setenv("FALCONET_DATABASE_URL", request.getfixturevalue("postgres").new_database())
    else:
        monkeypatch.delenv("FALCONET_DATABASE_URL", raising=False)
    engine, store = open_storage(tmp_path)
    yield Repository(engine, store, tmp_path)
    engine.dispose()


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (shade, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


class Statements:
    """The SQL a block of code sends, read from the engine as it goes."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def reading(self, table: str) -> list[str]:
        return [s for s in self.sent if s.lstrip().upper().startswith("SELECT") and f"FROM {table}" in s.replace("\n", " ")]


@pytest.fixture
def statements(repo: Repository) -> Iterator[Statements]:
    seen = Statements()

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.sent.append(statement)

    event.listen(repo.engine, "before_cursor_execute", record)
    yield seen
    event.remove(repo.engine, "before_cursor_execute", record)


def test_a_batch_reads_its_project_tags_once(repo: Repository, statements: Statements) -> None:
    project = repo.create_project("batch", domain=CLASSIFICATION_COMPACT)
    cat = repo.create_tag(project.id, "cat").id
    statements.sent.clear()
    ok, results = repo.add_images(project.id, [Upload(check_image(png(i)), [cat]) for i in range(5)]
                                  + [Upload(check_image(png(9)), ["not-a-tag"])])
    assert [r["status"] for r in results] == ["OK"] * 5 + ["ErrorInvalidTag"] and not ok
    assert len(statements.reading("tags")) == 1


def test_a_tag_deleted_during_the_upload_is_reported_and_nothing_is_half_written(repo: Repository) -> None:
    """The batch reads its tags once; a tag deleted (by another request) after that read and before
    the image's own transaction must not come back as a duplicate or leave an image without it."""
    project = repo.create_project("race", domain=CLASSIFICATION_COMPACT)
    cat = repo.create_tag(project.id, "cat").id
    dog = repo.create_tag(project.id, "dog").id
    deleted = []

    def delete_cat_first(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES") and not deleted:
            deleted.append(True)
            repo.delete_tag(project.id, cat)  # a second connection, as a concurrent request would use

    event.listen(repo.engine, "before_cursor_execute", delete_cat_first)
    try:
        ok, results = repo.add_images(project.id, [Upload(check_image(png(1)), [cat]), Upload(check_image(png(2)), [dog])])
    finally:
        event.remove(repo.engine, "before_cursor_execute", delete_cat_first)
    assert deleted and not ok
    assert [r["status"] for r in results] == ["ErrorInvalidTag", "OK"]
    assert "deleted" in results[0]["message"] and results[0].get("image_id") is None
    with repo.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.images)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(db.image_tags)).scalar() == 1


def test_project_thumbnails_are_the_newest_images_in_one_query(repo: Repository, statements: Statements) -> None:
    first, second, empty = (repo.create_project(name, domain=CLASSIFICATION_COMPACT) for name in ("a", "b", "c"))
    for project, shades in ((first, (1, 2, 3)), (second, (4,))):
        for shade in shades:
            repo.add_images(project.id, [Upload(check_image(png(shade)))])
    with repo.engine.connect() as conn:  # "newest" as the image list orders it, ties included
        newest = {p.id: repo.image_rows(conn, p.id, order="Newest", take=1)[0] for p in (first, second)}
    statements.sent.clear()
    found = repo.thumbnails([first.id, second.id, empty.id])
    assert found == {p: f"{row.sha256}.{row.format}" for p, row in newest.items()}
    assert len(statements.sent) == 1 and repo.thumbnails([]) == {}


def test_a_box_for_a_tag_the_image_has_keeps_one_tag_row(repo: Repository) -> None:
    project = repo.create_project("boxes", domain=DETECTION_COMPACT)
    knife = repo.create_tag(project.id, "knife").id
    box = {"tagId": knife, "left": 0.1, "top": 0.1, "width": 0.3, "height": 0.3}
    _, results = repo.add_images(project.id, [Upload(check_image(png(7)), [knife], [box])])
    image = results[0]["image_id"]
    added = repo.add_regions(project.id, [{**box, "imageId": image, "left": 0.5}])
    assert len(added["created"]) == 1
    with repo.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.image_tags)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(db.regions)).scalar() == 2


def _tag_row(repo: Repository) -> dict[str, str]:
    project = repo.create_project("rows", domain=CLASSIFICATION_COMPACT)
    tag = repo.create_tag(project.id, "t").id
    _, results = repo.add_images(project.id, [Upload(check_image(png(3)))])
    return {"image_id": results[0]["image_id"], "tag_id": tag, "created": db.now()}


def test_insert_unless_present_ignores_a_taken_key(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    row = _tag_row(repo)
    with repo.engine.begin() as conn:
        db.insert_unless_present(conn, db.image_tags, **row)
        db.insert_unless_present(conn, db.image_tags, **row)
    # A database with neither dialect's ON CONFLICT takes the check-then-insert path.
    monkeypatch.setattr(repo.engine.dialect, "name", "another")
    with repo.engine.begin() as conn:
        db.insert_unless_present(conn, db.image_tags, **row)
    with repo.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(db.image_tags)).scalar() == 1


def test_postgresql_gets_its_own_on_conflict_clause() -> None:
    sent: list[str] = []

    class Recorder:
        dialect = postgresql.dialect()

        def execute(self, statement: object) -> None:
            sent.append(str(statement.compile(dialect=self.dialect)))  # type: ignore[attr-defined]

    db.insert_unless_present(Recorder(), db.image_tags, image_id="i", tag_id="t", created="now")  # type: ignore[arg-type]
    assert len(sent) == 1 and sent[0].startswith("INSERT INTO image_tags") and sent[0].endswith("ON CONFLICT DO NOTHING")
