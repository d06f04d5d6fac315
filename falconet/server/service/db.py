"""The service's tables and their migrations (SQLAlchemy Core).

The database URL is the only thing that names SQLite: a PostgreSQL URL gives the same tables.
Migrations are an ordered list of steps; each one runs once, inside a transaction, and is
recorded in ``schema_migrations``, so an older data directory is brought forward at start.
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any, Callable

from sqlalchemy import (JSON, Column, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, and_, create_engine, event, exists, insert, select, text)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

projects = Table(
    "projects", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("domain_id", String(36), nullable=False),
    Column("classification_type", String(16)),
    Column("target_export_platforms", JSON, nullable=False, default=list),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
)

tags = Table(
    "tags", metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("type", String(16), nullable=False, default="Regular"),
    Column("created", String(32), nullable=False),
    UniqueConstraint("project_id", "name", name="uq_tag_name"),
)

images = Table(
    "images", metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("format", String(8), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("created", String(32), nullable=False),
    Column("metadata", JSON, nullable=False, default=dict),
    UniqueConstraint("project_id", "sha256", name="uq_image_content"),
)

image_tags = Table(
    "image_tags", metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", String(36), ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Column("created", String(32), nullable=False),
)

regions = Table(
    "regions", metadata,
    Column("id", String(36), primary_key=True),
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("tag_id", String(36), ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    Column("left", Float, nullable=False),
    Column("top", Float, nullable=False),
    Column("width", Float, nullable=False),
    Column("height", Float, nullable=False),
    Column("created", String(32), nullable=False),
)

iterations = Table(
    "iterations", metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
    Column("trained_at", String(32)),
    Column("domain_id", String(36), nullable=False),
    Column("classification_type", String(16)),
    Column("training_type", String(16), nullable=False, default="Regular"),
    Column("reserved_budget_in_hours", Integer, nullable=False, default=0),
    Column("budget_s", Float),
    Column("training_time_s", Float, nullable=False, default=0.0),
    Column("publish_name", String(256)),
    Column("prediction_id", Text),
    Column("error", Text),
    Column("progress", JSON, nullable=False, default=dict),
    Column("worker_pid", Integer),
    Column("selected_tags", JSON, nullable=False, default=list),
    #: what the iteration trained on: [{image, tags: [tag ids], regions: [[tag, l, t, w, h]]}]
    Column("snapshot", JSON, nullable=False, default=list),
    Column("snapshot_hash", String(64), nullable=False, default=""),
    #: the tags at training time, in the model's label order: [{id, name, type}]
    Column("tags", JSON, nullable=False, default=list),
    UniqueConstraint("project_id", "publish_name", name="uq_publish_name"),
)

exports = Table(
    "exports", metadata,
    Column("iteration_id", String(36), ForeignKey("iterations.id", ondelete="CASCADE"), primary_key=True),
    Column("platform", String(16), primary_key=True),
    Column("flavor", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("file", Text),
    Column("created", String(32), nullable=False),
)

predictions = Table(
    "predictions", metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(36), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("iteration_id", String(36), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("format", String(8), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("application", String(64)),
    Column("created", String(32), nullable=False),
    Column("results", JSON, nullable=False, default=list),
)

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("applied", String(32), nullable=False),
)


def now() -> str:
    """UTC time in the ISO-8601 form the hosted service answers with."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def insert_unless_present(conn: Connection, table: Table, **values: Any) -> None:
    """Insert a row unless its primary key is taken, on any database the URL may name.

    SQLite's ``INSERT OR IGNORE`` prefix is dropped silently on PostgreSQL, where the duplicate
    would then raise; the ``ON CONFLICT DO NOTHING`` of each dialect keeps the check and the
    insert in one statement, so two writers cannot both pass the check.
    """
    if conn.dialect.name in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
        conn.execute(dialect_insert(table).values(**values).on_conflict_do_nothing())
        return
    key = and_(*(column == values[column.name] for column in table.primary_key.columns))
    if not conn.execute(select(exists().where(key))).scalar():
        conn.execute(insert(table).values(**values))


def _initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t.name != "schema_migrations"])


def _image_metadata_default(conn: Connection) -> None:
    # Rows written before metadata existed get an empty object rather than NULL.
    conn.execute(text("UPDATE images SET metadata = '{}' WHERE metadata IS NULL"))


#: (version, name, step): append only; never edit a step that has shipped.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial tables", _initial),
    (2, "image metadata defaults to {}", _image_metadata_default),
]


def connect(url: str) -> Engine:
    """An engine for ``url`` with every migration applied.

    SQLite gets WAL journaling (readers never wait for the training worker's progress writes),
    foreign keys on, and a busy timeout so two processes writing at once queue instead of failing.
    """
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, json_serializer=lambda v: json.dumps(v, separators=(",", ":")),
                           connect_args={"timeout": 30, "check_same_thread": False} if is_sqlite else {})
    if is_sqlite:
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
    migrate(engine)
    return engine


def migrate(engine: Engine) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied_now = []
    with engine.begin() as conn:
        schema_migrations.create(conn, checkfirst=True)
        done = {row.version for row in conn.execute(schema_migrations.select())}
    for version, name, step in MIGRATIONS:
        if version in done:
            continue
        with engine.begin() as conn:
            step(conn)
            conn.execute(schema_migrations.insert().values(version=version, name=name, applied=now()))
        applied_now.append(version)
    return applied_now


def schema_version(engine: Engine) -> int:
    with engine.connect() as conn:
        versions = [row.version for row in conn.execute(schema_migrations.select())]
    return max(versions, default=0)


__all__ = ["connect", "migrate", "schema_version", "now", "new_id", "insert_unless_present", "projects", "tags", "images",
           "image_tags", "regions", "iterations", "exports", "predictions"]
