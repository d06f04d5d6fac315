"""``falconet`` commands. Heavy imports happen inside each command so ``--help`` stays instant."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from falconet.core.errors import FalconetError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, evaluate, export and run image classifiers and object detectors.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: check and convert.")
app.add_typer(data_app, name="data")


def _console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h30m' -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise typer.BadParameter(f"cannot read the duration {text!r}; use e.g. 90s, 10m or 1h")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _fail(exc: FalconetError) -> None:
    _console().print(f"[bold red]error[/] [{exc.code}] {exc.message}")
    raise typer.Exit(2)


def _print_report(dataset: Any) -> None:
    console = _console()
    counts = dataset.counts()
    console.print(f"[bold]{dataset.source}[/]: {len(dataset.samples)} usable images, task {dataset.task}, format {dataset.format}")
    console.print("  per tag: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    by_kind: dict[str, list[Any]] = {}
    for issue in dataset.issues:
        by_kind.setdefault(issue.kind, []).append(issue)
    for kind, issues in sorted(by_kind.items()):
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        colour = {"error": "red", "warning": "yellow"}.get(first.severity, "cyan")
        console.print(f"  [{colour}]{kind}[/]: {first.path} {first.message}{more}")


class _ProgressBar:
    """A rich progress bar fed by the trainers' progress dicts."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=_console(), transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_ProgressBar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        phase = str(event.get("phase", ""))
        key = re.sub(r"\d+", "#", phase) if phase.startswith(("fine-tune", "epoch")) else phase
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(phase, total=event.get("total") or 1, info="")
        task = self.tasks[key]
        info = f"loss {event['loss']:.3f}" if event.get("loss") is not None else ""
        self.progress.update(task, description=phase, completed=event.get("step", 0), total=event.get("total") or 1, info=info)


def _metrics_table(metrics: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    detection = "map50" in metrics
    for col in ["tag", "images", "precision", "recall", "AP"] + (["AP50:95"] if detection else []):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for tag, m in metrics["per_tag"].items():
        row = [tag, str(m.get("images", "")), f"{m['precision']:.3f}", f"{m['recall']:.3f}",
               "-" if m.get("ap") is None else f"{m['ap']:.3f}"]
        if detection:
            row.append("-" if m.get("ap50_95") is None else f"{m['ap50_95']:.3f}")
        table.add_row(*row)
    console = _console()
    console.print(table)
    line = (f"images {metrics['images']}  threshold {metrics['threshold']}  precision {metrics['precision']:.3f}  "
            f"recall {metrics['recall']:.3f}  mAP {metrics['map']:.3f}")
    if "accuracy" in metrics:
        line += f"  top-1 accuracy {metrics['accuracy']:.4f}"
    if detection:
        line += f"  mAP@0.5 {metrics['map50']:.3f}  mAP@0.5:0.95 {metrics['map50_95']:.3f}"
    console.print(line)
    if "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        cm_table = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm_table.add_column("")
        for label in cm["labels"]:
            cm_table.add_column(label, justify="right")
        for label, row in zip(cm["labels"], cm["rows_true_columns_predicted"]):
            cm_table.add_row(label, *[str(v) for v in row])
        console.print(cm_table)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Folder of tag folders, a CSV (image,tags), COCO JSON, or detection data"),
    out: Path = typer.Option(..., "--out", "-o", help="Model package directory to write"),
    val: Optional[Path] = typer.Option(None, "--val", help="Labelled images to measure on instead of a held-out split"),
    domain: str = typer.Option("general-compact", "--domain", help="Recipe; see `falconet domains`"),
    mode: str = typer.Option("quick", "--mode", help="quick or advanced"),
    budget: Optional[str] = typer.Option(None, "--budget", help="Time budget for advanced training, e.g. 10m"),
    task: Optional[str] = typer.Option(None, "--task", help="Force multiclass, multilabel or detection"),
    data_format: Optional[str] = typer.Option(None, "--format", help="Force the detection data format: voc, coco, yolo, customvision"),
    threshold: float = typer.Option(0.5, "--threshold", help="Probability threshold for precision/recall"),
    overlap: float = typer.Option(0.5, "--overlap", help="IoU threshold for detection precision/recall"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a model from labelled photos and write a model package with honest metrics."""
    from falconet.training.pipeline import TrainRequest, train_package

    if mode not in ("quick", "advanced"):
        raise typer.BadParameter("--mode must be quick or advanced")
    task_name = {"multiclass": "classification-multiclass", "multilabel": "classification-multilabel"}.get(task or "", task)
    request = TrainRequest(data=data, out=out, val=val, domain=domain, mode=mode,
                           budget_s=parse_duration(budget) if budget else None, task=task_name, format=data_format,
                           seed=seed, threshold=threshold, overlap=overlap)
    try:
        with _ProgressBar() as bar:
            result = train_package(request, progress=bar, report=_print_report)
    except FalconetError as exc:
        _fail(exc)
        return
    m = result.manifest
    split = m.training["split"]
    _metrics_table(m.metrics, f"{m.task} on {split['evaluated_images']} images the model did not train on ({split['method']})")
    _console().print(f"model package: [bold]{result.package}[/] (training {m.training['seconds']} s)")


@app.command()
def evaluate(
    package: Path = typer.Argument(..., help="Model package directory"),
    data: Path = typer.Argument(..., help="Labelled images (same layouts as train)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    threshold: float = typer.Option(0.5, "--threshold"),
    overlap: float = typer.Option(0.5, "--overlap"),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnx, torch, ... (default: the exported file)"),
) -> None:
    """Measure a model package on labelled images."""
    import falconet
    from falconet.core.manifest import DETECTION
    from falconet.training.pipeline import evaluate_predictor, read_dataset

    try:
        predictor = falconet.load(package, backend=backend)
        task = predictor.manifest.task
        dataset = read_dataset(data, task if task == DETECTION else None, for_training=False)
        if task != DETECTION and task.endswith("multiclass") and dataset.task != task:
            dataset = read_dataset(data, task, for_training=False)
        unknown = set(dataset.labels) - set(predictor.labels)
        if unknown:
            raise FalconetError(f"The data has tags the model does not know: {', '.join(sorted(unknown))}.",
                                code="BadRequestUnknownTag", status=400)
        metrics, _ = evaluate_predictor(predictor, dataset.samples, predictor.labels, task, threshold, overlap)
    except FalconetError as exc:
        _fail(exc)
        return
    metrics["backend"] = predictor.backend.name
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        _metrics_table(metrics, f"{package} on {data}")


@app.command()
def export(
    package: Path = typer.Argument(..., help="Model package directory"),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma-separated formats, or 'all' (default: onnx)"),
    device: Optional[str] = typer.Option(None, "--device", help="Export what a device profile recommends (rpi4, rpi5, jetson-orin-nano, x86-cpu)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Also write a zip for app developers: files, labels, manifest, README"),
    parity_data: Optional[Path] = typer.Option(None, "--parity-data", help="Photos to measure parity on if the held-out images moved"),
    accept_degradation: bool = typer.Option(False, "--accept-degradation", help="Keep an export that misses its parity tolerance"),
) -> None:
    """Export the trained model and verify every file against it."""
    from falconet.exporter.registry import TARGETS, export as run_export, resolve_formats

    try:
        spec = formats
        if device is not None:
            from falconet.runtime.devices import load_device

            profile = load_device(device)
            recommended = [f for f in profile["formats"] if f in TARGETS]
            spec = ",".join(dict.fromkeys([*recommended, *resolve_formats(formats)])) if formats else ",".join(recommended)
            _console().print(f"{profile['title']}: {', '.join(recommended)} (backend {profile['backend']}, "
                             f"{profile['threads'] or 'all'} threads)")
        names = resolve_formats(spec or "onnx")
        results = run_export(package, names, parity_data=parity_data, accept_degradation=accept_degradation,
                             log=lambda s: _console().print(s))
        if bundle is not None:
            from falconet.exporter.bundle import write_bundle

            write_bundle(package, names, bundle)
    except FalconetError as exc:
        _fail(exc)
        return
    for name, entry in results.items():
        p = entry["parity"]
        if not p.get("measured", True):
            _console().print(f"[yellow]{name}[/]: {package / entry['file']}  parity NOT measured: {p['reason']}")
            continue
        figures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items()
                            if k not in ("reference", "runtime", "within_tolerance", "measured", "precision"))
        colour = "green" if p.get("within_tolerance") else "yellow"
        _console().print(f"[{colour}]{name}[/]: {package / entry['file']}  parity vs torch on {p['runtime']}: {figures}")
    if bundle is not None:
        _console().print(f"bundle: {bundle}")


@app.command()
def predict(
    package: Path = typer.Argument(..., help="Model package directory"),
    images: list[Path] = typer.Argument(..., help="Image files"),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per image (Custom Vision prediction objects)"),
    threshold: float = typer.Option(0.0, "--threshold", help="Hide predictions below this probability"),
    backend: Optional[str] = typer.Option(None, "--backend", help="An exported format (onnx, onnx-int8, tflite-int8, openvino, ...); default: onnx, else the first export"),
) -> None:
    """Run a model package on images."""
    import falconet

    try:
        predictor = falconet.load(package, backend=backend)
    except FalconetError as exc:
        _fail(exc)
        return
    failed = 0
    for path in images:
        try:
            predictions = predictor.predict(path, threshold=threshold)
        except FalconetError as exc:
            failed += 1
            if as_json:
                typer.echo(json.dumps({"image": str(path), "error": exc.to_dict()}))
            else:
                _console().print(f"[red]{path}[/]: [{exc.code}] {exc.message}")
            continue
        if as_json:
            typer.echo(json.dumps({"image": str(path), "predictions": [p.to_dict() for p in predictions]}))
        else:
            typer.echo(f"{path}")
            for p in predictions:
                box = ""
                if p.bounding_box:
                    b = p.bounding_box
                    box = f"  box left {b.left:.3f} top {b.top:.3f} width {b.width:.3f} height {b.height:.3f}"
                typer.echo(f"  {p.tag_name:<24} {p.probability:.4f}{box}")
    if failed:
        raise typer.Exit(1)


@app.command()
def domains() -> None:
    """List the training domains: what each is for and what it really is."""
    from falconet.training.domains import DOMAINS

    for d in DOMAINS.values():
        typer.echo(f"{d.name:<28} {d.kind:<15} {d.backbone} @ {d.input_size}px{'' if d.compact else '  (not compact)'}")
        typer.echo(f"{'':<28} {d.summary}")


@data_app.command("check")
def data_check(
    data: Path = typer.Argument(...),
    task: Optional[str] = typer.Option(None, "--task"),
    data_format: Optional[str] = typer.Option(None, "--format"),
) -> None:
    """Validate a dataset and print the report training would show."""
    from falconet.training.pipeline import read_dataset

    task_name = {"multiclass": "classification-multiclass", "multilabel": "classification-multilabel"}.get(task or "", task)
    try:
        _print_report(read_dataset(data, task_name, data_format))
    except FalconetError as exc:
        _fail(exc)


@data_app.command("convert")
def data_convert(
    src: Path = typer.Argument(..., help="Detection data in any supported format"),
    dst: Path = typer.Argument(..., help="Output folder (must not exist or be empty)"),
    to: str = typer.Option(..., "--to", help="voc, coco, yolo or customvision"),
    data_format: Optional[str] = typer.Option(None, "--format", help="Force the source format"),
) -> None:
    """Convert detection data between Pascal VOC, COCO, YOLO and Custom Vision regions."""
    from falconet.data.detection import convert

    try:
        dataset = convert(src, dst, to, data_format)
    except FalconetError as exc:
        _fail(exc)
        return
    boxes = sum(len(s.boxes) for s in dataset.samples)
    _console().print(f"wrote {len(dataset.samples)} images, {boxes} boxes as {to} to {dst}")


from falconet.runtime.commands import bench, stream  # noqa: E402

app.command()(stream)
app.command()(bench)

from falconet.server.commands import serve  # noqa: E402

app.command()(serve)

from falconet.server.service.commands import service  # noqa: E402

app.command()(service)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
