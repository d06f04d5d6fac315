"""``falconet serve`` (registered in :mod:`falconet.cli`).

Only typer and the standard library at the top, so ``falconet --help`` stays instant; FastAPI,
uvicorn and the runtime load when the command runs.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Optional

import typer

from falconet.core.errors import FalconetError


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def parse_size(text: str) -> int:
    """'4MB', '512KB', '4194304' -> bytes (MB and KB are binary, as the hosted service's 4 MB is)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", text.lower())
    if not match:
        raise typer.BadParameter(f"cannot read the size {text!r}; use e.g. 4MB, 512KB or a number of bytes")
    scale = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get((match.group(2) or "b")[0], 1)
    return int(float(match.group(1)) * scale)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def concurrency(cores: int, workers: Optional[int], threads: Optional[int]) -> tuple[int, int]:
    """(workers, threads per inference). Two workers by default: while one decodes and resizes a
    photo (single-threaded work) the other runs its network, so no core waits; measured on 2 cores,
    2 workers x 1 thread served 1.5-2.9x the requests/s of 1 worker x 2 threads at 4 and 16 clients
    (a busy machine; see benchmarks/http_load.py)."""
    workers = workers or min(2, max(1, cores))
    return workers, threads or max(1, cores // workers)


def serve(
    packages: Optional[list[Path]] = typer.Argument(None, help="Model package directories, served under their folder names"),
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="NAME=PATH: serve a package under a publishedName (repeatable)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the server to the network (the container sets it)"),
    port: int = typer.Option(8080, "--port", "-p"),
    backend: Optional[str] = typer.Option(None, "--backend", help="An exported format (onnx, onnx-int8, tflite, openvino, ...); default: onnx, else the first export"),
    prediction_key: Optional[str] = typer.Option(None, "--prediction-key", envvar="FALCONET_PREDICTION_KEY", help="Require this Prediction-Key header on prediction routes (prefer the environment variable)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Inferences run at once, one runtime session each (default: 2 on 2+ cores)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads of each inference (default: usable cores / workers)"),
    queue_size: int = typer.Option(64, "--queue", min=0, help="Requests that may wait for a worker before the server answers 503"),
    queue_timeout: float = typer.Option(30.0, "--queue-timeout", min=0.1, help="Seconds a request may wait for a worker before 503"),
    max_body: str = typer.Option("4MB", "--max-body", help="Largest request body / fetched image (hosted service: 4MB)"),
    url_timeout: float = typer.Option(10.0, "--url-timeout", min=0.1, help="Seconds to fetch the image of a /url request"),
    allow_private_urls: bool = typer.Option(False, "--allow-private-urls", help="Let /url fetch from loopback, private and link-local addresses (your LAN)"),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log one line per request"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve model packages over HTTP with the Custom Vision prediction routes and JSON."""
    import uvicorn

    from falconet.runtime.backends import default_threads
    from falconet.server.models import ModelSet, parse_model_specs
    from falconet.server.prediction_app import ServerSettings, create_app
    from falconet.server.urlfetch import UrlPolicy

    console = _console()
    limit = parse_size(max_body)
    try:
        models = ModelSet.open(parse_model_specs(packages or [], model or []), backend)
    except FalconetError as exc:
        console.print(f"[bold red]error[/] [{exc.code}] {exc.message}", highlight=False)
        raise typer.Exit(2)
    workers, threads = concurrency(default_threads(), workers, threads)
    settings = ServerSettings(prediction_key=prediction_key or None, max_body_bytes=limit, workers=workers,
                              threads=threads, queue_size=queue_size, queue_timeout_s=queue_timeout,
                              url_policy=UrlPolicy(timeout_s=url_timeout, max_bytes=limit, allow_private=allow_private_urls))
    for m in models.models.values():
        console.print(f"serving [bold]{m.name}[/] = {m.package_dir} ({m.manifest.task}, backend {m.backend})", highlight=False)
    if not _is_loopback(host) and settings.prediction_key is None:
        console.print(f"[yellow]warning[/]: listening on {host} without a prediction key: anyone who can reach "
                      "this port can use the model (set FALCONET_PREDICTION_KEY).", highlight=False)
    app = create_app(models, settings, log=lambda s: console.print(s, highlight=False))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                timeout_graceful_shutdown=10)
