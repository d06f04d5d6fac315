"""Run the installed runtime the way a user does, and record everything for the comparison.

Runs unchanged on the x86 side (the reference) and inside the emulated arm64 root. For every
package (classifier, detector) and format (onnx = fp32, tflite-int8):

- ``raw``: the network's outputs on the preprocessed images, through ``falconet.load`` (what the
  1e-5 parity is measured on, before any rounding or thresholds);
- ``predict``: the ``falconet predict --json --backend FORMAT`` command's output, parsed;
- ``serve``: ``falconet serve classifier detector --backend FORMAT`` on a loopback port, the first
  image of each posted as raw bytes (the classifier on the container's ``POST /image``, the detector
  on its publishedName route), then the server is stopped (its process group, even on failure).

    python probe.py MODELS_DIR OUT_DIR FALCONET_EXECUTABLE PORT
writes OUT_DIR/probe.json and OUT_DIR/raw.npz.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("classifier", "detector")
FORMATS = ("onnx", "tflite-int8")


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


def cli_predict(falconet: str, models: Path, package: str, fmt: str) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run([falconet, "predict", str(models / package), *map(str, images_for(models, package)),
                           "--json", "--backend", fmt], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"falconet predict failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {"seconds": round(time.perf_counter() - start, 2), "results": lines}


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def serve_route(package: str) -> str:
    """The container's own route for the first model; the publishedName route for the detector."""
    return "/image" if package == PACKAGES[0] else f"/falconet/detect/iterations/{package}/image"


def cli_serve(falconet: str, models: Path, fmt: str, port: int) -> dict[str, Any]:
    """One server for both packages (the publishedName picks one): half the emulated start-ups."""
    start = time.perf_counter()
    server = subprocess.Popen([falconet, "serve", *(str(models / p) for p in PACKAGES), "--host", "127.0.0.1",
                               "--port", str(port), "--backend", fmt], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"falconet serve exited {server.returncode}: {server.stdout.read().decode()[-2000:]}")
            try:
                _get(base + "/readyz")
                break
            except OSError:
                if time.perf_counter() - start > 600:
                    raise RuntimeError("falconet serve was not ready after 600 s")
                time.sleep(0.5)
        answers: dict[str, Any] = {"ready_seconds": round(time.perf_counter() - start, 2),
                                   "models": json.loads(_get(base + "/models"))}
        for package in PACKAGES:
            image = images_for(models, package)[0]
            request = urllib.request.Request(base + serve_route(package), data=image.read_bytes(), method="POST",
                                             headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(request, timeout=300) as response:
                answers[package] = {"route": serve_route(package), "image": image.name,
                                    "response": json.loads(response.read())}
        return answers
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "cases": {}}
    arrays: dict[str, np.ndarray] = {}
    for fmt in FORMATS:
        served = cli_serve(falconet, models, fmt, port)
        port += 1
        for package in PACKAGES:
            key = f"{package}/{fmt}"
            outputs, description = raw_outputs(models, package, fmt)
            for k, array in enumerate(outputs):
                arrays[f"{package}__{fmt}__{k}"] = array
            report["cases"][key] = {
                "backend": description,
                "predict": cli_predict(falconet, models, package, fmt),
                "serve": {"ready_seconds": served["ready_seconds"], **served[package]},
            }
            print(f"{key}: {description}", flush=True)
    np.savez(out / "raw.npz", **arrays)
    (out / "probe.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
