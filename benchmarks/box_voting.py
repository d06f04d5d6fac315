"""Box voting against plain NMS on kept detection packages: the evidence behind the default.

Trains nothing. For each package kept by `python benchmarks/run.py RUN --keep` (a detection run),
the exported ONNX file runs once on every held-out image of that run's split; the same raw outputs
then go through the runtime's post-processing twice, with plain class-aware NMS and with box
voting (falconet.runtime.postprocess.BOX_VOTE_IOU / BOX_VOTE_POWER), and both are scored with the
evaluation the pipeline uses. So the two rows differ only in where the kept boxes are placed.

    python benchmarks/box_voting.py raccoon-quick raccoon-advanced fruit-advanced ...

Appends to benchmarks/results/box_voting.jsonl (one row per package) and rewrites
benchmarks/results/box_voting.md (latest row per package), which RESULTS.md includes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
ROWS = OUT / "box_voting.jsonl"
TABLE = OUT / "box_voting.md"


def compare(package: Path, run_name: str) -> dict[str, Any]:
    """mAP of one package's held-out images with plain NMS and with box voting."""
    import falconet
    from falconet.data.detection import read_detection
    from falconet.runtime.postprocess import BOX_VOTE_IOU, BOX_VOTE_POWER, decode_detections
    from falconet.training.metrics.detection import evaluate_detections

    import run as bench  # benchmarks/run.py: the runs and their splits

    spec = bench.RUNS[run_name]
    predictor = falconet.load(package, backend="onnx")
    labels = predictor.labels
    with tempfile.TemporaryDirectory() as tmp:
        _, test_folder = bench._prepare_split(spec["data"], Path(tmp))
        samples = read_detection(test_folder, min_images_per_tag=0).samples
        raw = [predictor.run(predictor.preprocess(s.path)[None])[:2] for s in samples]
    truth = [[b for b in s.boxes if b.label in labels] for s in samples]
    row: dict[str, Any] = {"package": package.name, "run": run_name, "images": len(samples),
                           "vote_iou": BOX_VOTE_IOU, "vote_power": BOX_VOTE_POWER}
    for name, vote in (("nms", None), ("voting", BOX_VOTE_IOU)):
        found = [decode_detections(b[0], s[0], 0.01, predictor.iou_threshold, predictor.max_detections,
                                   vote_iou=vote, vote_power=BOX_VOTE_POWER) for b, s in raw]
        named = [[(labels[c], score, *box) for c, score, *box in dets] for dets in found]
        metrics = evaluate_detections(truth, named, labels)
        row[name] = {"map50": round(float(metrics["map50"]), 4), "map50_95": round(float(metrics["map50_95"]), 4)}
    return row


def _run_name(package: Path) -> str:
    import run as bench

    names = sorted((n for n in bench.RUNS if package.name == n or package.name.startswith(n + "-")), key=len)
    if not names:
        raise SystemExit(f"{package.name} is not a benchmark run's package (see benchmarks/run.py RUNS)")
    return names[-1]


def write_table() -> None:
    rows: dict[str, dict[str, Any]] = {}
    for line in ROWS.read_text().splitlines() if ROWS.exists() else []:
        if line.strip():
            row = json.loads(line)
            rows[row["package"]] = row
    lines = [
        "## Box voting against plain NMS",
        "",
        "Written by `benchmarks/box_voting.py`: the same raw ONNX outputs on each run's held-out images, post-processed",
        "with plain class-aware NMS and with box voting (the runtime's default for new packages), scored the same way.",
        "",
        "| package | images | vote IoU / power | NMS mAP@0.5 | NMS mAP@0.5:0.95 | voting mAP@0.5 | voting mAP@0.5:0.95 | change @0.5:0.95 | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(rows.items()):
        change = r["voting"]["map50_95"] - r["nms"]["map50_95"]
        lines.append(f"| {name} | {r['images']} | {r['vote_iou']} / {r['vote_power']:g} | {r['nms']['map50']:.3f} | "
                     f"{r['nms']['map50_95']:.3f} | {r['voting']['map50']:.3f} | {r['voting']['map50_95']:.3f} | "
                     f"{change:+.3f} | {r['date']} |")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packages", nargs="+", help="names of packages in benchmarks/packages (or paths)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import run as bench

    OUT.mkdir(exist_ok=True)
    for name in args.packages:
        package = Path(name) if os.sep in name else HERE / "packages" / name
        if not (package / "model.onnx").is_file():
            raise SystemExit(f"{package} has no model.onnx: keep it with `python benchmarks/run.py RUN --keep` first")
        row = compare(package, _run_name(package))
        bench.record(ROWS, row)
    write_table()


if __name__ == "__main__":
    main()
