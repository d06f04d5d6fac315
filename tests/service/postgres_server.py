"""A real PostgreSQL server on a loopback port, for the tests that run the service on it.

``FALCONET_DATABASE_URL`` may name PostgreSQL instead of the SQLite file; these fixtures make that
claim tested rather than assumed. The server is Debian's (``scripts/install`` puts it on a machine
that lacks it, when it can), started from a scratch cluster in a temporary folder and stopped
afterwards; nothing is mocked. Without its programs or the ``psycopg`` driver the tests that ask
for it are skipped, saying which is missing. PostgreSQL refuses to run as root, so under root the
cluster belongs to the ``postgres`` account the Debian package creates.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

from live_service import free_port


def _program(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _program("initdb"), _program("pg_ctl")
        self.root = Path(tempfile.mkdtemp(prefix="falconet-pg-"))
        self.data = self.root / "data"
        self.port = free_port()

    def start(self) -> "PostgresServer":
        """initdb and pg_ctl start; a failure removes the scratch directory and says what the tool printed."""
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            subprocess.run(_as_owner([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
                                      "UTF8", "--no-sync"]), check=True, capture_output=True, text=True)
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
            subprocess.run(_as_owner([self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"), "-o",
                                      options, "-w", "start"]), check=True, capture_output=True, text=True)
        except BaseException as exc:
            shutil.rmtree(self.root, ignore_errors=True)
            if isinstance(exc, subprocess.CalledProcessError):
                raise RuntimeError(f"{' '.join(map(str, exc.cmd))} failed ({exc.returncode}): "
                                   f"{(exc.stderr or exc.stdout or '')[-2000:]}") from exc
            raise
        return self

    def stop(self) -> None:
        subprocess.run(_as_owner([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def postgres_missing() -> Optional[str]:
    """Why a PostgreSQL server cannot be started here, or None."""
    if _program("initdb") is None or _program("pg_ctl") is None:
        return "PostgreSQL's server programs (initdb, pg_ctl; Debian package postgresql) are not installed"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install 'falconet[postgresql]')"
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the cluster belongs to the postgres account
        import pwd

        if shutil.which("runuser") is None:
            return "running as root without runuser, and PostgreSQL refuses to run as root"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres account to own the cluster"
    return None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    reason = postgres_missing()
    if reason:
        pytest.skip(f"PostgreSQL not available: {reason}")
    server = PostgresServer().start()
    yield server
    server.stop()
