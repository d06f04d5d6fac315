"""Accuracy-from-small-data benchmark on the real datasets.

Trains and evaluates through the same pipeline as `falconet train`, and appends one row per run
to benchmarks/results.jsonl; `--table` rewrites benchmarks/RESULTS.md from all rows. Runs are
slow by design (full training): they belong here, not in the tests.

    python benchmarks/run.py hymenoptera-quick safari-quick ...     # named runs
    python benchmarks/run.py --all                                  # every run
    python benchmarks/run.py --table                                # just the table
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
TABLE = HERE / "RESULTS.md"


def datasets() -> Path:
    return Path(os.environ.get("FALCONET_DATASETS", HERE.parent.parent / "shared" / "datasets"))


def _prepare_split(name: str, work: Path) -> tuple[Path, Path | None]:
    """Lay out the benchmark's split as folders (symlinks; the shared data is never copied)."""
    root = datasets()
    if name == "hymenoptera":
        return root / "hymenoptera" / "train", root / "hymenoptera" / "val"
    if name == "raccoon":
        return _raccoon_split(root / "raccoon", work)
    if name == "fruit":
        return root / "fruit-detection" / "train", root / "fruit-detection" / "test"
    if name == "fork-scissors":
        return _fork_split(root / "cv-fork-scissors", work)
    return root / name, None  # safari (held-out split inside), cv-trees (k-fold inside)


def _raccoon_split(src: Path, work: Path) -> tuple[Path, Path]:
    """The authors' 160/40 split from their CSVs."""
    import csv

    parts = {}
    for part, csv_name in (("train", "train_labels.csv"), ("test", "test_labels.csv")):
        names = sorted({row["filename"] for row in csv.DictReader(open(src / "data" / csv_name))})
        folder = work / f"raccoon-{part}"
        for sub in ("images", "annotations"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            (folder / "images" / n).symlink_to(src / "images" / n)
            (folder / "annotations" / (Path(n).stem + ".xml")).symlink_to(src / "annotations" / (Path(n).stem + ".xml"))
        parts[part] = folder
    return parts["train"], parts["test"]


def _fork_split(src: Path, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """15+15 for training, 5+5 for testing, seeded."""
    import random

    regions = json.loads((src / "regions.json").read_text())
    out = {}
    rng = random.Random(seed)
    chosen = {}
    for tag in ("fork", "scissors"):
        names = sorted(p.name for p in (src / tag).iterdir())
        rng.shuffle(names)
        chosen[tag] = (names[:15], names[15:20])
    for part, index in (("train", 0), ("test", 1)):
        folder = work / f"fork-{part}"
        sub_regions = {}
        for tag in ("fork", "scissors"):
            (folder / tag).mkdir(parents=True, exist_ok=True)
            for n in chosen[tag][index]:
                (folder / tag / n).symlink_to(src / tag / n)
                sub_regions[n] = regions[n]
        (folder / "regions.json").write_text(json.dumps(sub_regions))
        out[part] = folder
    return out["train"], out["test"]


RUNS: dict[str, dict[str, Any]] = {
    "hymenoptera-quick": {"data": "hymenoptera", "mode": "quick"},
    "hymenoptera-advanced": {"data": "hymenoptera", "mode": "advanced", "budget": 540},
    "safari-quick": {"data": "safari", "mode": "quick"},
    "safari-advanced": {"data": "safari", "mode": "advanced", "budget": 300},
    "cv-trees-quick": {"data": "cv-trees", "mode": "quick"},
    "cv-trees-advanced": {"data": "cv-trees", "mode": "advanced", "budget": 300},
    "raccoon-quick": {"data": "raccoon", "mode": "quick"},
    "raccoon-advanced": {"data": "raccoon", "mode": "advanced", "budget": 540},
    "fruit-quick": {"data": "fruit", "mode": "quick"},
    "fruit-advanced": {"data": "fruit", "mode": "advanced", "budget": 540},
    # the issue's own example budget (--budget 15m): fruit has 1.5x raccoon's images, 3 tags
    "fruit-advanced-15m": {"data": "fruit", "mode": "advanced", "budget": 900},
    # how far the budget alone carries fruit (0.862 at 9 min, 0.889 at 15): the 0.90 target names no time
    "fruit-advanced-25m": {"data": "fruit", "mode": "advanced", "budget": 1500},
    "fork-scissors-quick": {"data": "fork-scissors", "mode": "quick"},
    "fork-scissors-advanced": {"data": "fork-scissors", "mode": "advanced", "budget": 300},
}


def _summary(history: dict[str, Any]) -> dict[str, Any]:
    """The few training facts worth keeping beside the figures."""
    tuned = history.get("fine_tune") or {}
    head = history.get("head") or history
    keep = {"method": history.get("method"), "l2": head.get("l2"), "temperature": head.get("temperature"),
            "views": head.get("views_per_image")}
    if tuned:
        keep.update({"epochs": tuned.get("epochs"), "chosen_epoch": tuned.get("chosen_epoch"),
                     "val_accuracy_by_epoch": [round(e["val_accuracy"], 3) for e in tuned.get("epochs_log", [])],
                     "val_loss_by_epoch": [round(e["val_loss"], 4) for e in tuned.get("epochs_log", [])],
                     "clear_wins": [e["epoch"] for e in tuned.get("epochs_log", []) if e.get("clear_win")],
                     "final": history.get("final")})
    for key in ("epochs", "steps", "images_per_s", "best_checkpoint"):
        if key in history:
            keep[key] = history[key]
    return keep


def stamp() -> dict[str, str]:
    """When a row was measured and by which commit's code."""
    return {"date": dt.datetime.now().isoformat(timespec="minutes"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()}


def append_row(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def record(path: Path, row: dict[str, Any]) -> None:
    """An analysis script's row: stamped with when and by which commit, appended, and shown."""
    row.update(stamp())
    append_row(path, row)
    print(json.dumps(row))


def machine() -> str:
    """The CPU with the instruction-set features speed depends on (int8 files need VNNI or SDOT to gain)."""
    import torch

    from falconet.runtime.bench import cpu_features, cpu_model

    features = " ".join(cpu_features()) or "none of the listed"
    return (f"{len(os.sched_getaffinity(0))} cores of {cpu_model()} ({features}), {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


#: trained packages kept for the export and HTTP benchmarks (git-ignored)
PACKAGES = HERE / "packages"


def kept_package(name: str, domain: str | None = None) -> Path:
    """Where ``--keep`` puts run ``name``'s package (trained with ``domain`` when one was given)."""
    return PACKAGES / (name if domain is None else f"{name}-{domain}")


def run(name: str, domain: str | None = None, keep: bool = False) -> dict[str, Any]:
    from falconet.training.pipeline import TrainRequest, train_package

    spec = RUNS[name]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val = _prepare_split(spec["data"], work)
        request = TrainRequest(data=train, out=work / "package", val=val, mode=spec["mode"],
                               budget_s=spec.get("budget"), domain=domain or "general-compact")
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        result = train_package(request)
        wall = time.monotonic() - started
        from falconet.exporter.registry import export

        parity = export(work / "package", ["onnx"])["onnx"]["parity"]
        m = result.manifest
        history = m.training["history"]
        row = {
            "run": name, "dataset": spec["data"], "mode": spec["mode"], "domain": m.domain, "backbone": m.backbone,
            "input_size": m.input.width,
            "budget_s": spec.get("budget"), "evaluation": m.training["split"]["method"],
            "evaluated_images": m.training["split"]["evaluated_images"],
            "accuracy": m.metrics.get("accuracy"), "map": m.metrics.get("map"),
            "map50": m.metrics.get("map50"), "map50_95": m.metrics.get("map50_95"),
            "precision": m.metrics["precision"], "recall": m.metrics["recall"],
            "train_seconds": history.get("total_seconds", history.get("seconds")),
            "wall_seconds": round(wall, 1),
            "onnx_parity": {k: v for k, v in parity.items() if k not in ("reference", "runtime", "tolerance")},
            # 1-minute load average before and after: above ~2 on 2 cores, something else shared the CPU
            "history": _summary(history),
            "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "machine": machine(), **stamp(),
        }
        if keep:
            # The held-out/validation images stay reachable: the split points at the shared datasets
            # (raccoon and fork-scissors at symlinked folders, which are re-created next to the package).
            target = kept_package(name, domain)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work / "package", target)
            for folder in work.iterdir():
                if folder.is_dir() and folder.name != "package":
                    shutil.rmtree(PACKAGES / folder.name, ignore_errors=True)
                    shutil.copytree(folder, PACKAGES / folder.name, symlinks=True)
            _repoint(target, work, PACKAGES)
    append_row(RESULTS, row)
    return row


def _repoint(package: Path, old: Path, new: Path) -> None:
    """Rewrite the kept package's recorded data paths from the temporary folder to PACKAGES."""
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(package)
    text = json.dumps(manifest.training).replace(str(old.resolve()), str(new.resolve()))
    manifest.training = json.loads(text)
    manifest.save(package)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f}" if pct else (f"{value:.3f}" if isinstance(value, float) else str(value))


def _load(row: dict[str, Any]) -> str:
    load = row.get("load")
    return "-" if not load else f"{load[0]}/{load[1]}"


def _parity(row: dict[str, Any]) -> str:
    p = row.get("onnx_parity")
    if not p:
        return "-"
    if "top1_agreement" in p:
        return f"top-1 {p['top1_agreement'] * p['images']:.0f}/{p['images']}, max diff {p['max_abs_diff']:.1e}"
    return f"boxes {p['matched_detections']}/{p['reference_detections']}, max score diff {p['max_score_diff']:.1e}"


#: Detection rows from this date on were trained by the current recipe and checkpoint rule.
CURRENT_DETECTOR = "2026-11-27T22:30"


def _domain(row: dict[str, Any]) -> str:
    """A row's domain, with the backbone and input size it was trained at when those are not the
    domain's now (general-detection was EfficientNet-Lite2 at 416 px until 2026-11-29, and for one
    reverted commit Lite0 at 320): rows of different models stay apart."""
    from falconet.training.domains import DOMAINS

    domain = DOMAINS.get(row["domain"])
    backbone, size = row.get("backbone"), row.get("input_size")
    if domain is None or not backbone or (backbone == domain.backbone and size in (None, domain.input_size)):
        return row["domain"]
    return f"{row['domain']} ({backbone}{f' at {size} px' if size else ''})"


def _cpu(row: dict[str, Any]) -> str:
    """The CPU part of a row's machine description (``2 cores of X (features), ...`` -> ``X``)."""
    machine = row.get("machine", "")
    return machine.split(" of ", 1)[-1].split(" (", 1)[0].split(",", 1)[0].strip() or "-"


def _detection_repeats(rows: list[dict[str, Any]]) -> list[str]:
    """Every run repeated at the current detector, with its spread: one budget-bound run says little
    (the same recipe has moved mAP@0.5 by 0.035 between runs on this VM). Runs from different CPUs
    train different step counts, so each CPU gets its own line under the pooled one."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("map50") is not None and row["date"] >= CURRENT_DETECTOR:
            runs.setdefault((row["run"], _domain(row)), []).append(row)
    repeated = {key: group for key, group in sorted(runs.items()) if len(group) > 1}
    if not repeated:
        return []
    lines = ["", f"### Detection runs repeated since {CURRENT_DETECTOR}", "",
             "A budget-bound run's training steps depend on the CPU it ran on, so they are listed beside the",
             "scores, and where the runs come from more than one CPU each CPU has its own line under the pooled one.", "",
             "| run | domain | CPU | runs | mAP@0.5 mean (each) | mAP@0.5:0.95 mean (each) | training steps (each) |",
             "|---|---|---|---|---|---|---|"]

    def line(name: str, domain: str, cpu: str, group: list[dict[str, Any]]) -> str:
        cells = []
        for key in ("map50", "map50_95"):
            values = [r[key] for r in group]
            cells.append(f"{sum(values) / len(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        steps = ", ".join(str((r.get("history") or {}).get("steps", "-")) for r in group)
        return f"| {name} | {domain} | {cpu} | {len(group)} | {cells[0]} | {cells[1]} | {steps} |"

    for (name, domain), group in repeated.items():
        by_cpu: dict[str, list[dict[str, Any]]] = {}
        for r in group:
            by_cpu.setdefault(_cpu(r), []).append(r)
        if len(by_cpu) == 1:
            lines.append(line(name, domain, next(iter(by_cpu)), group))
            continue
        lines.append(line(name, domain, "all", group))
        lines += [line(name, domain, cpu, members) for cpu, members in sorted(by_cpu.items())]
    return lines


def _section(module: Any) -> list[str]:
    """Another benchmark script's part of RESULTS.md: the lines it builds (``table_lines``) or the
    markdown table it last wrote (``TABLE``)."""
    if hasattr(module, "table_lines"):
        return module.table_lines()
    table = getattr(module, "TABLE", None)
    return ["", *table.read_text().rstrip("\n").splitlines()] if table is not None and table.exists() else []


def write_table() -> None:
    rows = [json.loads(l) for l in RESULTS.read_text().splitlines() if l.strip()] if RESULTS.exists() else []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        latest[(row["run"], _domain(row))] = row
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run.py` from `benchmarks/results.jsonl` (latest row per run and domain).",
        "Metrics are on images the model did not train on (`evaluation`: the dataset's own validation/test",
        "split, a seeded 80/20 held-out split, or 5-fold cross-validation). Times are wall-clock on the",
        "machine named in each row; the whole pipeline (decode, validation, training, evaluation) is",
        "included in `wall s`. `load` is the 1-minute load average before/after the run: above ~2 on a",
        "2-core machine means other work shared the CPU and the times (and budget-bound accuracy) suffer.",
        "Rows with `-` for load were measured before it was recorded, while other training jobs shared",
        "the CPU (load 3.5-4): their times are inflated and their advanced (budget-bound) runs got fewer epochs.",
        "",
        "## Classification",
        "",
        "| run | domain | evaluation | images | top-1 % | mAP | precision | recall | train s | wall s | load | ONNX vs torch | machine | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    det_lines = [
        "", "## Detection", "",
        "Rows named with a suffix are earlier recipes or experiments, kept for comparison: `-bins` the",
        "distance-bin box head, `-fs16` the backbone frozen to stride 16, `-task-no-warmup` task-aligned",
        "assignment from the first step (the default assigns as FCOS does for the first 30 %); `-15m` and",
        "`-25m` are longer budgets. Detection rows dated before 2026-11-27T19:00 (fruit's `general-detection`",
        "row and the longer budgets among them) were trained with FCOS assignment throughout. Advanced",
        f"rows dated from {CURRENT_DETECTOR} keep the latest checkpoint unless an earlier one is clearly better",
        "on the inner validation split (paired bootstrap); earlier rows kept the best-scoring one.", "",
        "| run | domain | evaluation | images | mAP@0.5 | mAP@0.5:0.95 | precision | recall | train s | wall s | load | ONNX vs torch | machine | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, domain), r in sorted(latest.items()):
        if r.get("map50") is not None:
            det_lines.append(f"| {name} | {domain} | {r['evaluation']} | {r['evaluated_images']} | {_fmt(r['map50'])} | "
                             f"{_fmt(r['map50_95'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['train_seconds'])} | "
                             f"{_fmt(r['wall_seconds'])} | {_load(r)} | {_parity(r)} | {r['machine']} | {r['date']} |")
        else:
            lines.append(f"| {name} | {domain} | {r['evaluation']} | {r['evaluated_images']} | {_fmt(r['accuracy'], True)} | "
                         f"{_fmt(r['map'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['train_seconds'])} | "
                         f"{_fmt(r['wall_seconds'])} | {_load(r)} | {_parity(r)} | {r['machine']} | {r['date']} |")
    det_lines += _detection_repeats(rows)
    extra: list[str] = []
    for module in ("exports", "http_load", "box_voting", "detector_ab", "checkpoint_trajectory",
                   "weight_averaging", "box_errors"):  # sections other benchmark scripts own, when they have results
        try:
            extra += _section(__import__(module))
        except ImportError:
            pass
    TABLE.write_text("\n".join(lines + det_lines + extra) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help=f"runs to do: {', '.join(RUNS)}")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--domain", default=None, help="override the domain (e.g. general)")
    parser.add_argument("--table", action="store_true", help="only rewrite RESULTS.md")
    parser.add_argument("--keep", action="store_true", help=f"keep the trained packages in {PACKAGES} (for benchmarks/exports.py and http_load.py)")
    args = parser.parse_args()
    if not datasets().is_dir():
        sys.exit(f"datasets not found at {datasets()} (set FALCONET_DATASETS)")
    names = list(RUNS) if args.all else args.runs
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f"unknown runs: {', '.join(unknown)}; known: {', '.join(RUNS)}")
    for name in [] if args.table else names:
        row = run(name, args.domain, args.keep)
        print(json.dumps(row), flush=True)
    write_table()


if __name__ == "__main__":
    main()
