"""Starting and watching worker processes: training iterations and exports.

A monitor thread starts queued jobs (at most ``max_trainings`` trainings and one export at a
time: each already uses every core), and notices workers that die without writing their result.
Workers run in their own process session, so a crash or restart of the service does not kill
them: at start, a job whose recorded worker is still alive is adopted, and one whose worker is
gone is marked Failed with the reason, so nothing stays in Training forever.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Engine

from falconet.server.service import db
from falconet.server.service.iterations import TRAINING, Iterations
from falconet.server.service.settings import DATABASE_ENV, ServiceSettings, database_url

POLL_S = 0.5
LOG_TAIL = 2000


@dataclass
class Job:
    key: tuple[str, ...]
    process: Optional[subprocess.Popen]  # None for a worker adopted from an earlier service process
    pid: int
    log: Path


def pid_alive(pid: Optional[int], marker: str) -> bool:
    """Whether ``pid`` is still a worker for ``marker`` (a reused pid of another program is not)."""
    if not pid or pid <= 0:  # -1 marks a worker being spawned; os.kill(-1) would signal every process
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return marker in cmdline and "falconet.server.service.worker" in cmdline


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-LOG_TAIL:] if lines else ""


class JobRunner:
    def __init__(self, engine: Engine, iterations: Iterations, settings: ServiceSettings,
                 log: Callable[[str], None] = print) -> None:
        self.engine, self.iterations, self.settings, self.log = engine, iterations, settings, log
        self.data_dir = Path(settings.data_dir)
        self.jobs: dict[tuple[str, ...], Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="falconet-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; running workers are stopped and their jobs marked Failed with the reason."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.process is not None and job.process.poll() is None:
                job.process.terminate()
                try:
                    job.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    job.process.kill()
            self._finish(job, "The service stopped while this job was running; start it again.")

    def wake(self) -> None:
        self._wake.set()

    def recover(self) -> None:
        """Adopt live workers of an earlier service process; fail jobs whose worker is gone."""
        for row in self.iterations.training():
            if row.worker_pid is None:
                continue  # queued, never started: it starts normally
            if pid_alive(row.worker_pid, row.id):
                self.jobs[("train", row.id)] = Job(("train", row.id), None, row.worker_pid, self._log_path("train", row.id))
                self.log(f"adopted the training worker {row.worker_pid} of iteration {row.id}")
            else:
                self.iterations.fail(row.id, "The training worker stopped before the iteration finished (the service "
                                             "or the machine restarted, or the worker was killed); train again.")
                self.log(f"iteration {row.id} was training when its worker stopped: marked Failed")
        with self.engine.begin() as conn:
            conn.execute(update(db.exports).where(db.exports.c.status == "Exporting").values(
                status="Failed", error="The service restarted during the export; export again."))

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._start_queued()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive one bad poll
                self.log(f"job monitor: {type(exc).__name__}: {exc}")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _log_path(self, kind: str, ident: str) -> Path:
        path = self.data_dir / "logs" / f"{kind}-{ident}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, key: tuple[str, ...], args: list[str]) -> None:
        log = self._log_path(key[0], "-".join(key[1:]))
        env = {**os.environ, DATABASE_ENV: database_url(self.data_dir), "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "falconet.server.service.worker", *args],
                                       stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with self._lock:
            self.jobs[key] = Job(key, process, process.pid, log)

    def _start_queued(self) -> None:
        with self._lock:
            running_training = sum(1 for k in self.jobs if k[0] == "train")
            running_export = any(k[0] == "export" for k in self.jobs)
        for row in self.iterations.training():
            if running_training >= self.settings.max_trainings:
                break
            if ("train", row.id) in self.jobs or row.worker_pid is not None:
                continue
            self.iterations.set_progress(row.id, progress={"phase": "starting"}, worker_pid=-1)
            self._spawn(("train", row.id), ["train", str(self.data_dir), row.id])
            running_training += 1
        if not running_export:
            with self.engine.connect() as conn:
                row = conn.execute(select(db.exports).where(db.exports.c.status == "Queued")
                                   .order_by(db.exports.c.created)).first()
            if row is not None:
                with self.engine.begin() as conn:
                    conn.execute(update(db.exports).where(and_(db.exports.c.iteration_id == row.iteration_id,
                                                               db.exports.c.platform == row.platform,
                                                               db.exports.c.flavor == row.flavor)).values(status="Exporting"))
                args = ["export", str(self.data_dir), row.iteration_id, row.platform] + ([row.flavor] if row.flavor else [])
                self._spawn(("export", row.iteration_id, row.platform, row.flavor), args)

    def _reap(self) -> None:
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.process is not None:
                code = job.process.poll()
                if code is None:
                    continue
                reason = f"The worker exited with code {code}" + (f" (signal {-code})" if code < 0 else "")
            elif pid_alive(job.pid, job.key[1]):
                continue
            else:
                reason = "The adopted worker stopped"
            tail = _tail(job.log)
            self._finish(job, reason + (f": {tail}" if tail else "") + ".")

    def _finish(self, job: Job, reason: str) -> None:
        """A worker is gone: if it left its job unfinished, say why on the job."""
        with self._lock:
            self.jobs.pop(job.key, None)
        if job.key[0] == "train":
            if self.iterations.fail(job.key[1], reason):
                self.log(f"iteration {job.key[1]} failed: {reason}")
        else:
            _, iteration_id, platform, flavor = job.key
            with self.engine.begin() as conn:
                conn.execute(update(db.exports).where(and_(
                    db.exports.c.iteration_id == iteration_id, db.exports.c.platform == platform,
                    db.exports.c.flavor == flavor, db.exports.c.status.in_(["Exporting", "Queued"])))
                    .values(status="Failed", error=reason))
        self.wake()

    def is_training(self, iteration_id: str) -> bool:
        return ("train", iteration_id) in self.jobs

    def kill(self, iteration_id: str) -> None:
        """Only for tests and operators: end a training worker abruptly (SIGKILL)."""
        job = self.jobs.get(("train", iteration_id))
        if job is not None:
            os.kill(job.pid, 9)


__all__ = ["JobRunner", "pid_alive", "TRAINING"]
