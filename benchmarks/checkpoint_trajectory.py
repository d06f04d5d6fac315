"""How a detector's test mAP moves across its checkpoints: the evidence behind which one is kept.

Analysis only, never a published figure: the held-out split is looked at at every checkpoint,
which the pipeline never does. A run trains the advanced recipe on the benchmark's training
split (as `benchmarks/run.py` lays it out) with the pipeline's budget, either on the same
images the pipeline trains on (its 15 % inner validation split held out, `--holdout`) or on
every training image, and scores each checkpoint (0.5, 0.7, 0.85, 1.0 of the schedule) on the
test split. The schedule's clock stops while a checkpoint is scored, so the training is the
pipeline's.

    FALCONET_DATASETS=/work/shared/datasets python benchmarks/checkpoint_trajectory.py fruit --seed 0 [--holdout]

Appends to benchmarks/results/checkpoint_trajectory.jsonl and rewrites
benchmarks/results/checkpoint_trajectory.md, which RESULTS.md includes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
ROWS = OUT / "checkpoint_trajectory.jsonl"
TABLE = OUT / "checkpoint_trajectory.md"
#: the pipeline's detection budgets in benchmarks/run.py are 540 s including four evaluations of
#: the inner split; the test split is scored here instead, so the budget gets the difference back
BUDGET_S = {"raccoon": 560, "fruit": 560, "fork-scissors": 310}


def trajectory(data: str, seed: int, holdout: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import run as bench
    from falconet.data.detection import read_detection
    from falconet.training.detection_trainer import train_detector
    from falconet.training.pipeline import detection_inner_split

    with tempfile.TemporaryDirectory() as work:
        train_root, test_root = bench._prepare_split(data, Path(work))
        train, test = read_detection(train_root), read_detection(test_root)
        samples = list(train.samples)
        if holdout:  # the images the pipeline trains on
            samples, _ = detection_inner_split(samples, seed)
        _, history = train_detector(samples, train.labels, budget_s=BUDGET_S[data], mode="advanced",
                                    val=list(test.samples), seed=seed)
    return {"data": data, "seed": seed, "holdout": holdout, "train_images": len(samples),
            "test_images": len(test.samples), "steps": history["steps"], "images_per_s": history["images_per_s"],
            "checkpoints": [{k: c[k] for k in ("step", "train_seconds", "map50", "map50_95")}
                            for c in history["checkpoints"]],
            "machine": bench.machine()}


def write_table() -> None:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()] if ROWS.exists() else []
    lines = [
        "## Detector checkpoints scored on the test split",
        "",
        "Written by `benchmarks/checkpoint_trajectory.py` (analysis only: the pipeline never looks at the test split).",
        "Test mAP@0.5 / mAP@0.5:0.95 of the EMA weights at 50, 70, 85 and 100 % of the advanced schedule;",
        "`held out` = trained on the pipeline's images (its inner validation split left out), `all` = on every training image.",
        "",
        "| data | seed | trained on | images | steps | 50 % | 70 % | 85 % | 100 % | machine | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{c['map50']:.3f} / {c['map50_95']:.3f}" for c in r["checkpoints"])
        lines.append(f"| {r['data']} | {r['seed']} | {'held out' if r['holdout'] else 'all'} | {r['train_images']} | "
                     f"{r['steps']} | {cells} | {r['machine']} | {r['date']} |")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", choices=sorted(BUDGET_S))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", action="store_true", help="train on the pipeline's images (inner split left out)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    row = trajectory(args.data, args.seed, args.holdout)
    import run as bench

    bench.record(ROWS, row)
    write_table()


if __name__ == "__main__":
    main()
