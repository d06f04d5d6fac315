"""``falconet stream`` and ``falconet bench`` (registered in :mod:`falconet.cli`).

Only typer and the standard library are imported here, so ``falconet --help`` stays instant;
OpenCV, the runtimes and numpy are imported when a command runs.
"""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from falconet.core.errors import FalconetError


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _fail(exc: FalconetError) -> None:
    _console().print(f"[bold red]error[/] [{exc.code}] {exc.message}", highlight=False)
    raise typer.Exit(2)


def _sigterm_stops_cleanly() -> Any:
    """``docker stop`` and systemd send SIGTERM: treat it like Ctrl-C so outputs are finalised.
    Returns the previous handler, to put back afterwards."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def stream(
    package: Optional[Path] = typer.Argument(None, help="Model package directory (not needed with --remote)"),
    source: str = typer.Option(..., "--source", "-s", help="Webcam index (0), a video file, or rtsp:// / http(s):// stream"),
    show: bool = typer.Option(False, "--show", help="Show the annotated frames in a window (needs a display)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the annotated video (.mp4, .avi, .mkv, .mov)"),
    jsonl: Optional[str] = typer.Option(None, "--jsonl", help="Write one JSON line per processed frame to this file ('-': stdout)"),
    every: int = typer.Option(1, "--every", min=1, help="Process every Nth frame (files), at most one frame in N (live)"),
    threshold: float = typer.Option(0.5, "--threshold", help="Hide predictions below this probability"),
    backend: Optional[str] = typer.Option(None, "--backend", help="An exported format (onnx, tflite-int8, openvino, ...)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads (default: every usable core)"),
    remote: Optional[str] = typer.Option(None, "--remote", help="Send frames to a falconet serve at this URL instead of running the model here"),
    prediction_key: Optional[str] = typer.Option(None, "--prediction-key", envvar="FALCONET_PREDICTION_KEY", help="Prediction-Key header for --remote"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many processed frames"),
    retries: Optional[int] = typer.Option(None, "--retries", min=0, help="Give up after this many failed reconnections in a row (default: never)"),
) -> None:
    """Run a model on a webcam, a video file or an RTSP/HTTP stream: JSON lines, annotated video, window."""
    from falconet.runtime.sources import open_source
    from falconet.runtime.stream import AnnotatedVideo, Window, local_infer, remote_infer, run_stream

    console = _console()
    if package is None and remote is None:
        raise typer.BadParameter("give a model package, or --remote URL of a falconet serve")
    sink = None
    try:
        if remote is not None:
            from falconet.runtime.remote import RemotePredictor

            client = RemotePredictor(remote, prediction_key=prediction_key)
            infer = remote_infer(client, threshold)
            model = client.url
        else:
            import falconet

            options = {"threads": threads} if threads else {}
            predictor = falconet.load(package, backend=backend, **options)
            infer = local_infer(predictor, threshold)
            model = f"{package} ({getattr(predictor.backend, 'description', predictor.backend.name)})"
        window = Window(f"falconet {source}") if show else None
        frames = open_source(source, every=every, retries=retries, log=lambda m: console.print(f"[yellow]{m}[/]", highlight=False))
        if frames.live:
            frames.start()  # a wrong address fails now, and the camera's frame rate is known for --out
        video = None
        if out is not None:
            video = AnnotatedVideo(out, (frames.fps / every) if not frames.live else frames.fps)
        if jsonl is not None:
            sink = sys.stdout if jsonl == "-" else open(jsonl, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        console.print(f"{frames.description} -> {model}; Ctrl-C stops", highlight=False)
        previous = _sigterm_stops_cleanly()
        try:
            summary = run_stream(frames, infer, jsonl=sink, video=video, window=window, max_frames=max_frames)
        finally:
            import signal

            signal.signal(signal.SIGTERM, previous)
    except FalconetError as exc:
        _fail(exc)
        return
    finally:
        if sink is not None and sink is not sys.stdout:
            sink.close()
    line = (f"{summary.frames_processed} frames processed of {summary.frames_read} read, {summary.frames_dropped} dropped, "
            f"{summary.reconnects} reconnects, {summary.errors} errors, {summary.fps} FPS, "
            f"inference {summary.mean_inference_ms} ms mean; stopped by {summary.stopped_by}")
    if summary.video:
        line += f"; video {summary.video} ({summary.video_frames} frames)"
    console.print(line, highlight=False)
    if summary.error:
        console.print(f"[bold red]error[/] [StreamLost] {summary.error}", highlight=False)
        raise typer.Exit(1)


def _print_table(result: dict[str, Any]) -> None:
    """Fits 80 columns: times in ms; the machine on its own line above."""
    from rich.table import Table

    m = result["machine"]
    console = _console()
    console.print(f"{result['package']['path']} on {m.get('board') or m['cpu']}: {m['cores']} cores, {m['os']}, "
                  f"Python {m['python']}; latency in ms", highlight=False)
    table = Table(box=None, pad_edge=False)
    for column in ("backend", "threads", "p50", "p90", "p99", "e2e p50", "img/s", "peak MB", "load s"):
        table.add_column(column, justify="left" if column == "backend" else "right", no_wrap=True)
    for r in result["results"]:
        if "error" in r:
            table.add_row(r["backend"], str(r["threads"]), f"[red]{r['error']['code']}[/]")
            console.print(f"[red]{r['backend']} ({r['threads']} threads)[/]: {r['error']['message']}", highlight=False)
            continue
        lat, whole = r["latency_ms"], r["end_to_end_ms"]
        threads = "default" if r["threads"] is None else str(r["threads"])
        table.add_row(r["backend"], threads + (f" x{r['batch']}" if r["batch"] > 1 else ""),
                      f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{whole['p50']:.2f}",
                      f"{r['throughput_ips']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['load_s']:.2f}")
    console.print(table)
    for s in result["skipped"]:
        console.print(f"skipped {s['backend']}: {s['reason']}", highlight=False)


def bench(
    package: Path = typer.Argument(..., help="Model package directory"),
    backend: str = typer.Option("all", "--backend", help="'all' (every export that runs here) or comma-separated names"),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts, e.g. 1,2,4 (default: 1 and every usable core)"),
    runs: int = typer.Option(50, "--runs", help="Timed runs per case (at least 50)"),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first"),
    batch: int = typer.Option(1, "--batch", help="Images per run"),
    image: Optional[Path] = typer.Option(None, "--image", help="A photo to predict on (default: seeded noise 640x480)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="Where to write the JSON ('-': stdout); default bench-<package>-<host>.json"),
) -> None:
    """Measure latency (p50/p90/p99), throughput and peak memory per backend and thread count, on this device."""
    from falconet.runtime.bench import run_bench

    console = _console()
    try:
        result = run_bench(package, backend, threads, runs=runs, warmup=warmup, batch=batch,
                           image=str(image) if image else None, log=lambda m: console.print(m, highlight=False))
    except FalconetError as exc:
        _fail(exc)
        return
    _print_table(result)
    text = json.dumps(result, indent=2)
    if json_out == "-":
        typer.echo(text)
    else:
        target = Path(json_out or f"bench-{package.resolve().name}-{socket.gethostname()}.json")
        target.write_text(text + "\n", encoding="utf-8")
        console.print(f"JSON: {target} (device_rows go in devices/<device>.json, see devices/README.md)", highlight=False)
    if any("error" in r for r in result["results"]):
        raise typer.Exit(1)
