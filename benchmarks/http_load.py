"""HTTP load on `falconet serve` next to the in-process Predictor, on the same images.

Trains nothing. It takes a model package (by default the hymenoptera classifier kept by
`python benchmarks/run.py hymenoptera-quick --keep`), starts `falconet serve` on a free loopback
port, and for each number of concurrent clients (1, 4, 16) sends the same photos as raw bytes to
`POST /image` over keep-alive connections, bounded by a request count and a time limit. Next to
it, the in-process figure: `falconet.load(...).predict(bytes)` in one loop on the same bytes
(decode, preprocess, model, post-process: the same work the server does per request), once with
the runtime's default threads and once with one thread; the HTTP rows are compared with the
faster of the two.

The load client is a small asyncio HTTP/1.1 client (prebuilt requests, one connection per
client) so that it takes as little CPU as possible from the server it measures on the same
machine; every answer is checked (status 200, and the top tag equal to the in-process one).

    python benchmarks/http_load.py [PACKAGE] [--images DIR] [--clients 1,4,16] [--requests 400] [--seconds 20]

Writes benchmarks/results/http_load.jsonl (one row per run) and benchmarks/results/http_load.md
(the latest run's table, for RESULTS.md to include).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "results"
TABLE = OUT / "http_load.md"  #: the latest run's table (RESULTS.md includes it)
DEFAULT_PACKAGE = HERE / "packages" / "hymenoptera-quick"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def datasets() -> Path:
    return Path(os.environ.get("FALCONET_DATASETS", REPO.parent / "shared" / "datasets"))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "arch": platform.machine(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def load_images(folder: Path, limit: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    return [(str(p.relative_to(folder)), p.read_bytes()) for p in files]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(latencies_s: list[float], wall_s: float, errors: int) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies_s]
    return {"requests": len(ms), "errors": errors, "seconds": round(wall_s, 3),
            "rps": round(len(ms) / wall_s, 2) if wall_s > 0 else 0.0,
            "p50_ms": round(percentile(ms, 50), 2) if ms else None, "p99_ms": round(percentile(ms, 99), 2) if ms else None}


# ------------------------------------------------------------------------------------ in process
def in_process(package: Path, backend: str | None, images: list[tuple[str, bytes]], count: int,
               seconds: float, threads: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """One caller, one predictor: what `falconet.load` gives a script (default threads unless given)."""
    import falconet
    from falconet.runtime.backends import default_threads

    predictor = falconet.load(package, backend=backend, **({"threads": threads} if threads else {}))
    top = {name: predictor.predict(data)[0].tag_name for name, data in images}  # also the warm-up
    latencies, start = [], time.perf_counter()
    deadline = start + seconds
    for i in range(count):
        t = time.perf_counter()
        predictor.predict(images[i % len(images)][1])
        latencies.append(time.perf_counter() - t)
        if time.perf_counter() > deadline:
            break
    result = summary(latencies, time.perf_counter() - start, 0)
    result["backend"] = getattr(predictor.backend, "description", predictor.backend.name)
    result["threads"] = threads or default_threads()
    return result, top


# ------------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(package: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "falconet.cli", "serve", str(package), "--port", str(port),
               "--no-access-log", "--log-level", "warning", *extra]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not become ready within 120 s")


def request_bytes(port: int, body: bytes) -> bytes:
    head = (f"POST /image HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\nAccept: application/json\r\n\r\n")
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length"), 0)
    return status, await reader.readexactly(length)


async def _client(port: int, payloads: list[tuple[str, bytes]], top: dict[str, str], state: dict[str, Any],
                  latencies: list[float], deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while state["sent"] < state["count"] and time.perf_counter() < deadline:
            index = state["sent"]
            state["sent"] += 1
            name, raw = payloads[index % len(payloads)]
            started = time.perf_counter()
            writer.write(raw)
            status, body = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            ok = status == 200
            if ok:
                predictions = json.loads(body).get("predictions") or [{}]
                ok = predictions[0].get("tagName") == top[name]
            if not ok:
                state["errors"] += 1
                if len(state["examples"]) < 3:
                    state["examples"].append(f"{status} {body[:200]!r}")
    finally:
        writer.close()


async def http_level(port: int, payloads: list[tuple[str, bytes]], top: dict[str, str], clients: int,
                     count: int, seconds: float) -> dict[str, Any]:
    state: dict[str, Any] = {"sent": 0, "count": count, "errors": 0, "examples": []}
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, payloads, top, state, latencies, start + seconds) for _ in range(clients)))
    result = summary(latencies, time.perf_counter() - start, state["errors"])
    result.update({"clients": clients, "error_examples": state["examples"]})
    return result


# ------------------------------------------------------------------------------------ report
def markdown(row: dict[str, Any]) -> str:
    m, local = row["machine"], row["in_process"]
    base = max(local, key=lambda r: r["rps"])
    lines = [
        f"## HTTP serving: `falconet serve` vs in-process ({row['package']})",
        "",
        f"{row['date']}, {m['cores']} cores of {m['cpu']} ({m['arch']}), Python {m['python']}; load average "
        f"{'/'.join(str(x) for x in m['load_average'])} before, {'/'.join(str(x) for x in row['load_average_after'])} after. "
        f"{row['images']} photos from {row['images_from']} as raw bytes to `POST /image` over loopback keep-alive "
        f"connections, at most {row['requests']} requests or {row['seconds']} s per row; server "
        f"`{' '.join(row['server_args']) or '(defaults)'}`, {base['backend']}. The in-process rows are "
        f"`falconet.load(...).predict(bytes)` in one loop; the HTTP rows are compared with the faster one. "
        f"The load client runs on the same machine.",
        "",
        "| clients | requests | errors | req/s | p50 ms | p99 ms | vs in-process |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in local:
        lines.append(f"| in-process, {r['threads']} thread{'s' if r['threads'] > 1 else ''} | {r['requests']} | 0 | "
                     f"{r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['rps'] / base['rps']:.2f}x |")
    for level in row["http"]:
        ratio = level["rps"] / base["rps"] if base["rps"] else 0.0
        lines.append(f"| {level['clients']} | {level['requests']} | {level['errors']} | {level['rps']:.1f} | "
                     f"{level['p50_ms']:.1f} | {level['p99_ms']:.1f} | {ratio:.2f}x |")
    last = row["http"][-1]
    target = "met" if last["errors"] == 0 and last["rps"] >= 0.8 * base["rps"] else "NOT met"
    lines += ["", f"Target (≥ 0.8x in-process at {last['clients']} clients, 0 errors): {target}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", nargs="?", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--images", type=Path, default=None, help="photos to send (default: hymenoptera val)")
    parser.add_argument("--max-images", type=int, default=64)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=400, help="requests per row, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per row, at most")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--server-arg", action="append", default=[], help="passed to falconet serve, e.g. --server-arg=--workers=2")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()

    if not (args.package / "manifest.json").is_file():
        raise SystemExit(f"No model package at {args.package}. Make the hymenoptera one (about a minute of training):\n"
                         f"    python benchmarks/run.py hymenoptera-quick --keep\n"
                         f"or give any exported package: python benchmarks/http_load.py runs/NAME --images PHOTOS")
    folder = args.images or datasets() / "hymenoptera" / "val"
    images = load_images(folder, args.max_images) if folder.is_dir() else []
    if not images:
        raise SystemExit(f"No photos in {folder}; pass --images DIR (or set FALCONET_DATASETS).")
    extra = [*(["--backend", args.backend] if args.backend else []), *args.server_arg]
    before = machine()

    local = []
    for threads in dict.fromkeys([None, 1]):
        result, top = in_process(args.package, args.backend, images, args.requests, args.seconds, threads)
        print(f"in-process, {result['threads']} threads: {result['rps']} images/s, p50 {result['p50_ms']} ms "
              f"({result['backend']})", flush=True)
        if all(r["threads"] != result["threads"] for r in local):
            local.append(result)
    port = free_port()
    server = start_server(args.package, port, extra)
    try:
        payloads = [(name, request_bytes(port, data)) for name, data in images]
        levels = []
        for clients in (int(c) for c in args.clients.split(",")):
            level = asyncio.run(http_level(port, payloads, top, clients, args.requests, args.seconds))
            print(f"{clients:>3} clients: {level['rps']} req/s, p50 {level['p50_ms']} ms, p99 {level['p99_ms']} ms, "
                  f"{level['errors']} errors {level['error_examples'] or ''}", flush=True)
            levels.append(level)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    row = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "package": args.package.name,
           "images": len(images), "images_from": str(folder), "requests": args.requests, "seconds": args.seconds,
           "server_args": extra, "machine": before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
           "in_process": local, "http": levels}
    table = markdown(row)
    print("\n" + table)
    if not args.no_write:
        OUT.mkdir(exist_ok=True)
        with open(OUT / "http_load.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        TABLE.write_text(table)
        print(f"wrote {OUT / 'http_load.jsonl'} and {TABLE}")


if __name__ == "__main__":
    main()
