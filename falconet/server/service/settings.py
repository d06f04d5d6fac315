"""What ``falconet service`` can change, and where its data lives."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sqlalchemy.engine import Engine

from falconet.server.service.store import LocalImageStore
from falconet.server.urlfetch import UrlPolicy

DATABASE_ENV = "FALCONET_DATABASE_URL"


@dataclass
class ServiceSettings:
    data_dir: Path
    training_key: Optional[str] = None
    prediction_key: Optional[str] = None
    #: Regular (quick) training budget in seconds; None lets each task use its default.
    quick_budget_s: Optional[float] = None
    #: Training workers running at once (each is a process using every core it is given).
    max_trainings: int = 1
    max_prediction_bytes: int = 4 * 1024 * 1024
    max_training_bytes: int = 6 * 1024 * 1024
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)


def database_url(data_dir: Path) -> str:
    """``$FALCONET_DATABASE_URL`` (e.g. a PostgreSQL URL), else SQLite inside the data directory."""
    return os.environ.get(DATABASE_ENV) or f"sqlite:///{Path(data_dir).resolve() / 'falconet.db'}"


def open_storage(data_dir: Path) -> tuple[Engine, LocalImageStore]:
    from falconet.server.service.db import connect

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return connect(database_url(data_dir)), LocalImageStore(data_dir / "images")
