"""Crashes in the middle of training: no iteration stays in Training forever.

A worker killed with SIGKILL, a service stopped while training, and a machine that lost both
(service and worker killed, then the service started again on the same data directory): each
leaves the iteration Failed with a reason a person can act on.
"""
from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path

import httpx

from conftest import COLOURS, draw
from live_service import Service, free_port, wait_for


def _workers(iteration_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if "falconet.server.service.worker" in cmdline and iteration_id in cmdline:
                found.append(int(entry.name))
    return found


def _start_training(client: httpx.Client, tmp_path: Path) -> tuple[str, dict]:
    project = client.post("/projects", params={"name": f"restart-{time.monotonic_ns()}"}).json()["id"]
    images = []
    for n, tag in enumerate(("red", "blue")):
        tag_id = client.post(f"/projects/{project}/tags", params={"name": tag}).json()["id"]
        for i in range(5):
            data = draw(tmp_path / f"{tag}{i}.jpg", COLOURS[tag], seed=900 + 10 * n + i).read_bytes()
            images.append({"name": f"{tag}{i}.jpg", "contents": base64.b64encode(data).decode(), "tagIds": [tag_id]})
    client.post(f"/projects/{project}/images/files", json={"images": images}).raise_for_status()
    iteration = client.post(f"/projects/{project}/train").json()
    assert iteration["status"] == "Training"
    deadline = time.monotonic() + 60
    while not _workers(iteration["id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers(iteration["id"]), "no training worker started"
    return project, iteration


def test_a_killed_worker_fails_its_iteration_with_the_reason(tmp_path: Path) -> None:
    svc = Service(tmp_path / "data", free_port()).start()
    try:
        with svc.client() as client:
            project, iteration = _start_training(client, tmp_path)
            for pid in _workers(iteration["id"]):
                os.kill(pid, signal.SIGKILL)
            done = wait_for(iteration, client, project, timeout_s=60)
            assert done["status"] == "Failed"
            assert "signal 9" in done["trainingErrorDetails"]
            # The project is not stuck: it can train again.
            again = client.post(f"/projects/{project}/train", params={"forceTrain": "true"})
            assert again.status_code == 200 and again.json()["status"] == "Training"
    finally:
        svc.stop()


def test_stopping_the_service_fails_the_training_it_stopped(tmp_path: Path) -> None:
    svc = Service(tmp_path / "data", free_port()).start()
    with svc.client() as client:
        project, iteration = _start_training(client, tmp_path)
    svc.stop(signal.SIGTERM)
    assert not _workers(iteration["id"])
    restarted = Service(svc.data_dir, free_port()).start()
    try:
        with restarted.client() as client:
            done = client.get(f"/projects/{project}/iterations/{iteration['id']}").json()
            assert done["status"] == "Failed" and "service stopped" in done["trainingErrorDetails"]
    finally:
        restarted.stop()


def test_a_crash_of_service_and_worker_is_found_at_the_next_start(tmp_path: Path) -> None:
    svc = Service(tmp_path / "data", free_port()).start()
    with svc.client() as client:
        project, iteration = _start_training(client, tmp_path)
    workers = _workers(iteration["id"])
    svc.stop(signal.SIGKILL)  # no shutdown code runs: as if the machine lost power
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    restarted = Service(svc.data_dir, free_port()).start()
    try:
        with restarted.client() as client:
            done = client.get(f"/projects/{project}/iterations/{iteration['id']}").json()
            assert done["status"] == "Failed"
            assert "worker stopped before the iteration finished" in done["trainingErrorDetails"]
            assert client.get(f"/projects/{project}/images/count").json() == 10  # the workspace is intact
    finally:
        restarted.stop()
