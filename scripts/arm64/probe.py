"""Run the installed runtime the way a user does, and record everything for the comparison.

Runs unchanged on the x86 side (the reference) and inside the emulated arm64 root. For every
package (classifier, detector) and format (onnx = fp32, tflite-int8):

- ``raw``: the network's outputs on the preprocessed images, through ``falconet.load`` (what the
  1e-5 parity is measured on, before any rounding or thresholds);
- ``predict``: the ``falconet predict --json --backend FORMAT`` command's output, parsed;
- ``serve``: ``falconet serve classifier detector --backend FORMAT`` on a loopback port, the first
  image of each posted as raw bytes (the classifier on the container's ``POST /image``, the detector
  on its publishedName route).

Why one process: under qemu every new Python process pays again for translating the interpreter,
numpy, onnxruntime, LiteRT, FastAPI and the warm-up runs (one ``falconet predict`` process cost
20-75 s, a server 50-190 s before it was ready). So the commands run through the CLI's own entry
(``falconet.cli.app``, the object the console script calls) inside this process: ``predict`` with
its standard output captured, ``serve`` (one server per format, both at once) on threads of their
own (each command line parsed on the main thread, the command run on its server's thread). The
installed console script itself is started once as a real process (``falconet --help``) to prove
the entry point works. What remains is mostly inference: an fp32 ONNX run of the test
detector takes ~10 s under qemu (0.03 s on the x86 host; measured with QEMU_CPU=cortex-a76), and
this probe runs each model ~8 times (raw outputs, predict, the server's warm-up and request).
The servers have no stop handle from outside, so the process ends with ``os._exit`` once its
results are written.

    python probe.py MODELS_DIR OUT_DIR FALCONET_EXECUTABLE PORT
writes OUT_DIR/probe.json and OUT_DIR/raw.npz.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("classifier", "detector")
FORMATS = ("onnx", "tflite-int8")
READY_TIMEOUT_S = 900


def images_for(models: Path, package: str) -> list[Path]:
    prefix = "colour_" if package == "classifier" else "scene_"
    return sorted((models / "images").glob(prefix + "*.jpg"))


def raw_outputs(models: Path, package: str, fmt: str) -> tuple[list[np.ndarray], str]:
    import falconet

    predictor = falconet.load(models / package, backend=fmt)
    batch = np.stack([predictor.preprocess(p) for p in images_for(models, package)])
    per_image = [predictor.run(batch[i:i + 1]) for i in range(len(batch))]
    outputs = [np.concatenate([run[k] for run in per_image]) for k in range(len(per_image[0]))]
    return outputs, getattr(predictor.backend, "description", fmt)


def run_command(args: list[str]) -> tuple[int, str]:
    """``falconet ARGS`` through the console script's own entry object, standard output captured."""
    from falconet.cli import app

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = app(args, standalone_mode=False, prog_name="falconet")
    return int(code or 0), captured.getvalue()


def cli_predict(models: Path, package: str, fmt: str) -> dict[str, Any]:
    start = time.perf_counter()
    code, out = run_command(["predict", str(models / package), *map(str, images_for(models, package)),
                             "--json", "--backend", fmt])
    if code != 0:
        raise RuntimeError(f"falconet predict {package} --backend {fmt} exited {code}: {out[-2000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {"seconds": round(time.perf_counter() - start, 2), "results": lines}


class ConsoleScript:
    """The installed ``falconet`` executable as a process of its own, started first and checked last
    (its start-up under emulation, ~25 s, overlaps this process's work); a thread waits for it so
    its own duration is recorded."""

    def __init__(self, falconet: str) -> None:
        self.command = [falconet, "--help"]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.output = ("", "")
        self.seconds = 0.0
        self.waiter = threading.Thread(target=self._wait, name="console-script", daemon=True)
        self.waiter.start()

    def _wait(self) -> None:
        self.output = self.process.communicate(timeout=600)
        self.seconds = round(time.perf_counter() - self.started, 2)

    def result(self) -> dict[str, Any]:
        self.waiter.join(timeout=600)
        out, err = self.output
        if self.process.returncode != 0 or "predict" not in out or "serve" not in out:
            raise RuntimeError(f"{' '.join(self.command)} failed ({self.process.returncode}): {err[-2000:]}")
        return {"command": " ".join(self.command), "seconds": self.seconds}


def _serve_command(args: list[str]) -> tuple[Any, Any]:
    """The ``falconet serve`` command of the CLI's entry object and its parsed context."""
    import click
    import typer

    from falconet.cli import app

    group = typer.main.get_command(app)
    command = group.get_command(click.Context(group, info_name="falconet"), "serve")
    return command, command.make_context("serve", args)


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def serve_route(package: str) -> str:
    """The container's own route for the first model; the publishedName route for the detector."""
    return "/image" if package == PACKAGES[0] else f"/falconet/detect/iterations/{package}/image"


class Server:
    """``falconet serve classifier detector --backend FMT`` on a thread; one inference worker, as the
    warm-up of each worker's sessions is what emulation makes slow."""

    def __init__(self, models: Path, fmt: str, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        args = [*(str(models / p) for p in PACKAGES), "--host", "127.0.0.1", "--port", str(port),
                "--backend", fmt, "--workers", "1", "--no-access-log", "--log-level", "warning"]
        # The command line is parsed here, on the calling thread: typer's parameter conversion sets
        # and deletes an environment variable, and two servers parsing at once raced on it.
        command, context = _serve_command(args)
        self.thread = threading.Thread(target=self._run, args=(command, context), name=f"serve-{fmt}", daemon=True)
        self.thread.start()

    def _run(self, command: Any, context: Any) -> None:
        try:
            with context:
                command.invoke(context)
            self.error = RuntimeError("falconet serve returned")
        except BaseException as exc:  # noqa: BLE001 - reported by wait_ready
            traceback.print_exc()
            self.error = exc

    def wait_ready(self) -> float:
        while True:
            if self.error is not None:
                raise RuntimeError(f"falconet serve stopped: {self.error!r}")
            try:
                _get(self.base + "/readyz")
                return round(time.perf_counter() - self.started, 2)
            except OSError:
                if time.perf_counter() - self.started > READY_TIMEOUT_S:
                    raise RuntimeError(f"falconet serve was not ready after {READY_TIMEOUT_S} s")
                time.sleep(0.5)

    def answers(self, models: Path) -> dict[str, Any]:
        result: dict[str, Any] = {"ready_seconds": self.wait_ready(), "models": json.loads(_get(self.base + "/models"))}
        for package in PACKAGES:
            image = images_for(models, package)[0]
            request = urllib.request.Request(self.base + serve_route(package), data=image.read_bytes(), method="POST",
                                             headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(request, timeout=300) as response:
                result[package] = {"route": serve_route(package), "image": image.name,
                                   "response": json.loads(response.read())}
        return result


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version(),
                            "qemu_cpu": os.environ.get("QEMU_CPU")}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        parts = sorted({line.split(":")[1].strip() for line in cpuinfo.splitlines() if line.startswith("CPU part")})
        info["cpuinfo_cpu_part"] = parts
        info["cpuinfo_features"] = next((line.split(":")[1].strip() for line in cpuinfo.splitlines()
                                         if line.startswith(("Features", "flags"))), None)
    except OSError:
        pass
    info["packages"] = {name: _version(name) for name in
                        ("falconet", "numpy", "pillow", "onnxruntime", "ai-edge-litert", "fastapi", "uvicorn")}
    return info


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(models: Path, out: Path, falconet: str, port: int) -> None:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    script = ConsoleScript(falconet)
    report: dict[str, Any] = {"machine": machine(), "cases": {}}
    arrays: dict[str, np.ndarray] = {}
    # predict first: its captured standard output must not meet the servers' threads.
    for fmt in FORMATS:
        for package in PACKAGES:
            key = f"{package}/{fmt}"
            outputs, description = raw_outputs(models, package, fmt)
            for k, array in enumerate(outputs):
                arrays[f"{package}__{fmt}__{k}"] = array
            report["cases"][key] = {"backend": description, "predict": cli_predict(models, package, fmt)}
            print(f"{key}: {description}, predict {report['cases'][key]['predict']['seconds']} s", flush=True)
    servers = {fmt: Server(models, fmt, port + i) for i, fmt in enumerate(FORMATS)}
    for fmt, server in servers.items():
        served = server.answers(models)
        for package in PACKAGES:
            report["cases"][f"{package}/{fmt}"]["serve"] = {"ready_seconds": served["ready_seconds"], **served[package]}
        print(f"serve {fmt}: ready after {served['ready_seconds']} s", flush=True)
    report["console_script"] = script.result()
    report["seconds"] = round(time.perf_counter() - started, 2)
    np.savez(out / "raw.npz", **arrays)
    (out / "probe.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    except BaseException:  # noqa: BLE001 - the server threads would keep a failed run alive
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
