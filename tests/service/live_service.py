"""A live ``falconet service`` process on a loopback port, for the SDK and the API tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

TRAINING_KEY = "service-training-key"
PREDICTION_KEY = "service-prediction-key"
#: Regular training in the tests is kept to seconds; recipes are measured in benchmarks/.
QUICK_BUDGET_S = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    data_dir: Path
    port: int
    process: Optional[subprocess.Popen] = None
    log: Optional[Path] = None
    #: FALCONET_DATABASE_URL for the process; None: the SQLite file in the data directory
    database_url: Optional[str] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def training(self) -> str:
        return f"{self.endpoint}/customvision/v3.3/training"

    def start(self, *extra: str) -> "Service":
        self.log = self.data_dir.parent / f"service-{self.port}-{time.monotonic_ns()}.log"
        env = {**os.environ, "FALCONET_TRAINING_KEY": TRAINING_KEY, "FALCONET_PREDICTION_KEY": PREDICTION_KEY}
        env.pop("FALCONET_DATABASE_URL", None)
        if self.database_url:
            env["FALCONET_DATABASE_URL"] = self.database_url
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "falconet.cli", "service", "--data-dir", str(self.data_dir), "--port", str(self.port),
                 "--quick-budget", str(QUICK_BUDGET_S), *extra], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"falconet service exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.endpoint}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"falconet service did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.training, headers={"Training-Key": TRAINING_KEY}, timeout=60)


def wait_for(iteration: dict, client: httpx.Client, project_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        iteration = client.get(f"/projects/{project_id}/iterations/{iteration['id']}").json()
        if iteration["status"] != "Training":
            return iteration
        time.sleep(0.5)
    raise AssertionError(f"iteration still training after {timeout_s} s: {iteration}")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "data", free_port()).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for many API tests, on each database it supports (PostgreSQL: a real server);
    image URLs may point at loopback (the tests' file server)."""
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    svc = Service(tmp_path_factory.mktemp("service") / "data", free_port(), database_url=url).start("--allow-private-urls")
    yield svc
    svc.stop()
