"""Run Falconet's ``onnx-gpu`` backend on a real NVIDIA GPU and record what happened.

Why it exists: the Jetson image's runtime path (onnxruntime's TensorRT, then CUDA, then CPU
provider) cannot run on the CPU-only build machines. When a GPU machine is lent, this script runs
the real ``falconet.load(..., backend="onnx-gpu")`` on real exported packages and records, per
package: the provider onnxruntime really used (the backend's ``description``), load time, network
latency on the GPU and on the CPU (``onnx`` backend, same file), the largest difference of the raw
outputs between the two, and whether the top-1 answers agree. ``falconet predict --backend onnx-gpu``
is also run, to check its ``--json`` output stays clean JSON when onnxruntime reports provider errors.

    python onnx_gpu_check.py MODELS_DIR OUT_JSON [--preload]
MODELS_DIR holds model packages (classifier/, detector/) and images/; ``--preload`` first calls
``onnxruntime.preload_dlls()`` (loads CUDA/cuDNN from the nvidia-* pip packages, as a pip install
beside torch needs; a Jetson has them in the system).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def latency_ms(run: Any, batch: np.ndarray, runs: int) -> dict[str, float]:
    for _ in range(10):
        run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * len(times))], 3),
            "runs": runs}


def check_package(package: Path, images: list[Path]) -> dict[str, Any]:
    import falconet

    cpu = falconet.load(package, backend="onnx")
    start = time.perf_counter()
    gpu = falconet.load(package, backend="onnx-gpu")
    load_s = time.perf_counter() - start
    batch = np.stack([cpu.preprocess(p) for p in images])
    diff = 0.0
    for i in range(len(batch)):
        for a, b in zip(gpu.run(batch[i:i + 1]), cpu.run(batch[i:i + 1]), strict=True):
            diff = max(diff, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    top_gpu = [(p[0].tag_name if p else None) for p in gpu.predict_batch(images)]
    top_cpu = [(p[0].tag_name if p else None) for p in cpu.predict_batch(images)]
    return {"description": gpu.backend.description, "provider": getattr(gpu.backend, "provider", None),
            "load_s": round(load_s, 2), "max_abs_diff_vs_cpu": diff, "top1_same": top_gpu == top_cpu,
            "top1": top_gpu, "gpu": latency_ms(gpu.run, batch[:1], 300), "cpu": latency_ms(cpu.run, batch[:1], 100)}


def main(models: Path, out: Path, preload: bool) -> None:
    import onnxruntime as ort

    if preload:
        ort.preload_dlls()
    report: dict[str, Any] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                              "preload_dlls": preload, "FALCONET_TRT_CACHE": os.environ.get("FALCONET_TRT_CACHE")}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        report["gpu"] = smi.stdout.strip()
    except FileNotFoundError:
        report["gpu"] = None
    for name, pattern in (("classifier", "colour_*.jpg"), ("detector", "scene_*.jpg")):
        if (models / name / "model.onnx").is_file():
            report[name] = check_package(models / name, sorted((models / "images").glob(pattern)))
            print(name, json.dumps(report[name]), flush=True)
    image = sorted((models / "images").glob("colour_*.jpg"))[0]
    done = subprocess.run([sys.executable, "-m", "falconet.cli", "predict", str(models / "classifier"), str(image),
                           "--json", "--backend", "onnx-gpu"], capture_output=True, text=True)
    try:
        report["cli_predict_json"] = json.loads(done.stdout.splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        report["cli_predict_json"] = {"error": "stdout is not one JSON line", "stdout": done.stdout[-2000:]}
    report["cli_predict_stderr_tail"] = done.stderr[-1500:]
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--preload"]
    if len(args) != 2:
        sys.exit(__doc__)
    main(Path(args[0]), Path(args[1]), "--preload" in sys.argv)
