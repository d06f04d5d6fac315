"""``falconet bench``: latency, throughput and memory of each backend, on the device itself.

Every (backend, threads) case runs in a fresh Python process: peak memory from
``resource.getrusage`` is a process-wide high-water mark that never goes down, so measuring one
backend after another in one process would charge each with the largest before it; a fresh
process also keeps one runtime's thread pools from slowing the next, and a backend that crashes
takes only its own case down. Each case warms up, then times at least 50 runs of the network
alone (``Predictor.run`` on a preprocessed batch) and as many of the whole ``predict`` call
(decode-free: preprocessing, network and post-processing on an RGB array), and reports p50, p90
and p99.

The JSON records the machine (CPU model, cores, OS, Python, package versions) so rows measured on
different devices can be compared, and ``device_rows`` in the form ``devices/*.json`` keeps them.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from falconet.core.errors import BackendUnavailableError, FalconetError

MIN_RUNS = 50
PACKAGES = ("falconet", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert",
            "opencv-python-headless", "opencv-python", "torch")
#: ARM "CPU part" ids of the cores Falconet's device profiles name (``/proc/cpuinfo`` has no model name there).
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE", "0xd4b": "Cortex-A78C"}


# ------------------------------------------------------------------ the machine

def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def cpu_model() -> str:
    """``model name`` on x86; the core type from ``CPU part`` on ARM; else what platform knows."""
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("cpu part"):
        return ARM_PARTS.get(fields["cpu part"].lower(), f"ARM CPU part {fields['cpu part']}")
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide how fast int8 and half-precision files run: x86 (AVX2, AVX-512,
#: VNNI int8 dot products, BF16, AMX) and ARM (NEON, SDOT/UDOT "asimddp", I8MM, fp16 arithmetic, SVE)
SPEED_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                  "asimd", "asimddp", "i8mm", "asimdhp", "bf16", "sve")
#: int8 dot-product instructions: without one, int8 kernels gain little or nothing over fp32
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_features() -> list[str]:
    """The :data:`SPEED_FEATURES` this CPU has (``flags`` on x86, ``Features`` on ARM)."""
    text = _read("/proc/cpuinfo") or ""
    present: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present.update(value.split())
    return [f for f in SPEED_FEATURES if f in present]


def os_name() -> str:
    release = _read("/etc/os-release") or ""
    for line in release.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine_info() -> dict[str, Any]:
    from falconet.runtime.backends import default_threads

    meminfo = _read("/proc/meminfo") or ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), None)
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_features": (features := cpu_features()),
        "int8_dot_product": any(f in features for f in INT8_DOT_PRODUCT),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": default_threads(),
        "memory_gb": round(mem_kb / 1024 ** 2, 1) if mem_kb else None,
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": package_versions(),
        # Boards say what they are here (Raspberry Pi, Jetson); x86 machines do not have it.
        "board": _read("/proc/device-tree/model"),
        "jetson_l4t": (_read("/etc/nv_tegra_release") or "").split(",")[0] or None,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    return info


# ------------------------------------------------------------------ which backends

#: Backends that run another backend's exported file on other hardware (``onnx-gpu``: the ONNX
#: file on onnxruntime's TensorRT/CUDA providers, for the Jetson image).
RUNS_FILE_OF = {"onnx-gpu": "onnx"}


def export_of(backend: str) -> str:
    return RUNS_FILE_OF.get(backend, backend)


def parse_threads(spec: Optional[str]) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; None -> 1 and every usable core."""
    from falconet.runtime.backends import default_threads

    if not spec:
        return sorted({1, default_threads()})
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError as exc:
        raise FalconetError(f"--threads takes numbers separated by commas, got {spec!r}.", code="BadRequestThreads", status=400) from exc
    if not values or min(values) < 1:
        raise FalconetError(f"--threads takes positive numbers, got {spec!r}.", code="BadRequestThreads", status=400)
    return list(dict.fromkeys(values))


def select_backends(package_dir: Path, spec: Optional[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(backends to run, skipped with the reason). ``all`` (default) is every export in the manifest
    whose file is there; names given explicitly must be. Whether the runtime imports is learnt in
    the case's own process (importing it here, torch above all, would inflate every peak measured)."""
    from falconet.core.manifest import load_manifest
    from falconet.runtime.backends import REGISTRY

    manifest = load_manifest(package_dir, verify=False)
    wanted = [s.strip() for s in (spec or "all").split(",") if s.strip()]
    explicit = wanted != ["all"]
    names = wanted if explicit else list(manifest.exports)
    chosen: list[str] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        reason = None
        if name not in REGISTRY:
            reason = "no runtime for this format on this platform" if name in manifest.exports else f"unknown backend; known: {', '.join(REGISTRY)}"
        elif name == "torch":
            reason = None if (package_dir / "weights.pt").is_file() else "the package has no weights.pt"
        elif export_of(name) not in manifest.exports:
            reason = f"not exported (falconet export {package_dir} --format {export_of(name)})"
        elif not (package_dir / manifest.exports[export_of(name)].get("file", "")).is_file():
            reason = f"{manifest.exports[export_of(name)].get('file')} is missing"
        if reason is None:
            chosen.append(name)
        elif explicit:
            code = "ExportNotFound" if name in REGISTRY else "BackendUnavailable"
            raise BackendUnavailableError(f"Cannot bench {name!r}: {reason}.", code=code, status=400)
        else:
            skipped.append({"backend": name, "reason": reason})
    if not chosen:
        raise BackendUnavailableError(f"{package_dir} has no export that runs here; run falconet export first.", code="ExportNotFound", status=400)
    return chosen, skipped


# ------------------------------------------------------------------ one case (in its own process)

def _peak_rss_mb() -> float:
    """This process's peak resident memory.

    On Linux ``getrusage``'s ru_maxrss survives exec: a child started by a 400 MB parent reports
    at least 400 MB (measured). VmHWM in /proc/self/status belongs to the new program alone, so it
    is used where it exists, and ``getrusage`` elsewhere.
    """
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB elsewhere


def _stats(samples_ms: Sequence[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": round(float(values.mean()), 3), "p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "min": round(float(values.min()), 3), "max": round(float(values.max()), 3)}


def bench_image(path: Optional[str], width: int = 640, height: int = 480) -> Any:
    """The image every run predicts on: the user's photo, or seeded noise of a camera frame's size."""
    import numpy as np

    if path:
        from falconet.core.images import load_image

        return np.asarray(load_image(path))
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _accepts_threads(backend_name: str) -> bool:
    import importlib

    from falconet.runtime.backends import REGISTRY

    module_name, class_name = REGISTRY[backend_name][0].split(":")
    parameters = inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
    return "threads" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def bench_case(package_dir: str | Path, backend: str, threads: int, runs: int = MIN_RUNS, warmup: int = 5,
               batch: int = 1, image: Optional[str] = None) -> dict[str, Any]:
    """Measure one backend at one thread count in this process (``run_bench`` gives it a fresh one)."""
    import numpy as np

    from falconet.runtime.predictor import load

    baseline_mb = _peak_rss_mb()
    threads_applied = _accepts_threads(backend)
    t0 = time.perf_counter()
    predictor = load(package_dir, backend=backend, **({"threads": threads} if threads_applied else {}))
    load_s = time.perf_counter() - t0
    picture = bench_image(image)
    tensor = np.stack([predictor.preprocess(picture)] * batch)
    pictures = [picture] * batch
    for _ in range(warmup):
        predictor.run(tensor)
    network = []
    started = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        predictor.run(tensor)
        network.append((time.perf_counter() - t) * 1000)
    network_s = time.perf_counter() - started
    whole = []
    started = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        predictor.predict_batch(pictures, batch_size=batch)
        whole.append((time.perf_counter() - t) * 1000)
    whole_s = time.perf_counter() - started
    entry = predictor.manifest.exports.get(export_of(backend), {})
    file = Path(package_dir) / entry["file"] if entry.get("file") else Path(package_dir) / "weights.pt"
    return {
        "backend": backend,
        "threads": threads if threads_applied else None,
        "runtime": getattr(predictor.backend, "description", backend),
        "precision": entry.get("precision"),
        "file": file.name,
        "file_mb": round(file.stat().st_size / 1e6, 2) if file.is_file() else None,
        "batch": batch,
        "warmup": warmup,
        "runs": runs,
        "load_s": round(load_s, 3),
        "latency_ms": _stats(network),
        "end_to_end_ms": _stats(whole),
        "throughput_ips": round(runs * batch / network_s, 2),
        "end_to_end_ips": round(runs * batch / whole_s, 2),
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child_env() -> dict[str, str]:
    """The child must import this very falconet, installed or not."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run_isolated(case: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "falconet.runtime.bench", json.dumps(case)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=_child_env())
    except subprocess.TimeoutExpired:
        return {"error": {"code": "BenchTimeout", "message": f"the case ran past {timeout_s:g} s"}}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": {"code": "BenchCaseFailed", "message": f"exit status {done.returncode}: {tail}"}}


# ------------------------------------------------------------------ the whole bench

def device_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows ``devices/*.json`` keep under ``measured`` (devices/README.md describes them)."""
    machine, package = result["machine"], result["package"]
    rows = []
    for r in result["results"]:
        if "error" in r:
            continue
        rows.append({
            "date": result["created"][:10], "falconet": machine["packages"].get("falconet"),
            "board": machine.get("board") or machine["cpu"], "cpu": machine["cpu"],
            "cpu_features": " ".join(machine.get("cpu_features") or []), "os": machine["os"],
            "python": machine["python"], "model": f"{package['domain']} {package['input']} {package['task']}",
            "backend": r["backend"], "runtime": r["runtime"], "threads": r["threads"], "batch": r["batch"],
            "p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"], "p99_ms": r["latency_ms"]["p99"],
            "end_to_end_p50_ms": r["end_to_end_ms"]["p50"], "throughput_ips": r["throughput_ips"],
            "peak_rss_mb": r["peak_rss_mb"], "runs": r["runs"],
        })
    return rows


def run_bench(package_dir: str | Path, backends: Optional[str] = "all", threads: Optional[str] = None,
              runs: int = MIN_RUNS, warmup: int = 5, batch: int = 1, image: Optional[str] = None,
              timeout_s: float = 600.0, log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Bench every chosen backend at every thread count, each in a fresh process."""
    from falconet.core.manifest import load_manifest

    package_dir = Path(package_dir)
    if runs < MIN_RUNS:
        raise FalconetError(f"--runs must be at least {MIN_RUNS} for p99 to mean anything.", code="BadRequestRuns", status=400)
    if batch < 1 or warmup < 0:
        raise FalconetError("--batch must be at least 1 and --warmup not negative.", code="BadRequestRuns", status=400)
    if image and not Path(image).is_file():
        raise FalconetError(f"No such image: {image}", code="ImageNotFound", status=400)
    manifest = load_manifest(package_dir, verify=False)
    names, skipped = select_backends(package_dir, backends)
    counts = parse_threads(threads)
    results: list[dict[str, Any]] = []
    for name in names:
        for count in counts:
            if log:
                log(f"{name}, {count} thread(s): {warmup} warm-up + {runs} timed runs ...")
            case = {"package": str(package_dir), "backend": name, "threads": count, "runs": runs,
                    "warmup": warmup, "batch": batch, "image": image}
            row = _run_isolated(case, timeout_s)
            if "error" in row and row["error"]["code"] == "BackendUnavailable" and backends in (None, "all"):
                skipped.append({"backend": name, "reason": row["error"]["message"]})
                break
            if "error" in row:
                row.update(backend=name, threads=count)
            results.append(row)
            if row.get("threads", count) is None:
                break  # the backend does not take a thread count: one run says it all
    machine = machine_info()
    result = {
        "falconet_bench": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "package": {"path": str(package_dir), "task": manifest.task, "domain": manifest.domain,
                    "backbone": manifest.backbone, "labels": len(manifest.labels),
                    "input": f"{manifest.input.width}x{manifest.input.height}"},
        "settings": {"runs": runs, "warmup": warmup, "batch": batch,
                     "image": image or "seeded noise 640x480 (pass --image for a real photo)"},
        "machine": machine,
        "results": results,
        "skipped": skipped,
    }
    result["device_rows"] = device_rows(result)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Child-process entry: one case as JSON in argv, one JSON line out."""
    case = json.loads((argv or sys.argv[1:])[0])
    try:
        row = bench_case(case["package"], case["backend"], case["threads"], case["runs"], case["warmup"],
                         case["batch"], case.get("image"))
    except FalconetError as exc:
        row = {"error": exc.to_dict()}
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
