"""Where a trained detector's boxes go wrong: per-side errors on the images it trained on and on unseen ones.

Analysis only, never a published figure. It takes a package that ``benchmarks/run.py --keep``
kept and splits the images three ways: the ones the detector trained on, the pipeline's inner
validation split (training side, never trained on) and the benchmark's test split. For every
ground-truth box it takes the highest-scoring detection of its tag that overlaps it by IoU >= 0.5
(as a mAP@0.5 match would) and records that IoU and each side's offset in units of the box's
width or height. A bias (sides off the same way on average) would be a fault to mend; a spread
much wider on unseen images than on trained ones says the remaining error is the model's
variance, which more data, stronger regularisation or averaging views (the mirror view) reduce.

    python benchmarks/box_errors.py raccoon [--domain general]

Appends to benchmarks/results/box_errors.jsonl and rewrites benchmarks/results/box_errors.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
ROWS = OUT / "box_errors.jsonl"
TABLE = OUT / "box_errors.md"
SIDES = ("left", "top", "right", "bottom")


def side_errors(truth: Sequence[Sequence[Any]], found: Sequence[Sequence[tuple]]) -> dict[str, Any]:
    """Matched IoU and per-side offsets (fractions of the true box's width or height).

    ``truth``: per image, boxes with ``label, x1, y1, x2, y2``; ``found``: per image, tuples
    (label, score, x1, y1, x2, y2) as the runtime returns them."""
    from falconet.core.boxes import iou_matrix

    ious: list[float] = []
    offsets: list[list[float]] = []
    missed = 0
    for boxes, detections in zip(truth, found):
        for g in boxes:
            mine = [d for d in detections if d[0] == g.label]
            overlaps = iou_matrix(np.array([[g.x1, g.y1, g.x2, g.y2]]), np.array([d[2:] for d in mine]))[0]
            matched = [k for k in range(len(mine)) if overlaps[k] >= 0.5]
            if not matched:
                missed += 1
                continue
            best = max(matched, key=lambda k: mine[k][1])  # the highest-scoring overlap, as mAP@0.5 ranks
            x1, y1, x2, y2 = mine[best][2:]
            w, h = g.x2 - g.x1, g.y2 - g.y1
            ious.append(float(overlaps[best]))
            offsets.append([(x1 - g.x1) / w, (y1 - g.y1) / h, (x2 - g.x2) / w, (y2 - g.y2) / h])
    if not ious:
        return {"boxes": missed, "matched": 0}
    o = np.asarray(offsets)
    return {
        "boxes": len(ious) + missed, "matched": len(ious),
        "iou_median": round(float(np.median(ious)), 4), "iou_mean": round(float(np.mean(ious)), 4),
        "iou_at_0.75": round(float(np.mean(np.asarray(ious) >= 0.75)), 4),
        "bias": {s: round(float(v), 4) for s, v in zip(SIDES, o.mean(0))},
        "spread": {s: round(float(v), 4) for s, v in zip(SIDES, o.std(0))},
    }


def measure(data: str, domain: str | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import run as bench
    from falconet.runtime import load
    from falconet.training.pipeline import detection_inner_split, read_dataset

    package = bench.kept_package(f"{data}-advanced", domain)
    if not package.is_dir():
        hint = f" --domain {domain}" if domain else ""
        raise SystemExit(f"no kept package at {package}: run `benchmarks/run.py {data}-advanced{hint} --keep` first")
    predictor = load(package)
    manifest = predictor.manifest
    train = read_dataset(Path(manifest.training["data"]["source"]))
    test = read_dataset(Path(manifest.training["split"]["source"]), for_training=False)
    trained, inner = detection_inner_split(list(train.samples), int(manifest.training["split"]["seed"]))
    groups = {"trained on": trained, "inner validation": inner, "test": list(test.samples)}
    out: dict[str, Any] = {"data": data, "package": package.name, "domain": manifest.domain,
                           "backbone": manifest.backbone, "input_size": manifest.input.width,
                           "map50_95": manifest.metrics.get("map50_95"), "groups": {}}
    for group, samples in groups.items():
        found = predictor.predict_batch([s.path for s in samples], threshold=0.0)
        named = [[(p.tag_name, p.probability, *p.bounding_box.to_xyxy()) for p in preds] for preds in found]
        truth = [[b for b in s.boxes if b.label in predictor.labels] for s in samples]
        out["groups"][group] = {"images": len(samples), **side_errors(truth, named)}
    out["machine"] = bench.machine()
    return out


def write_table() -> None:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()] if ROWS.exists() else []
    lines = [
        "## Where the detector's boxes go wrong",
        "",
        "Written by `benchmarks/box_errors.py` (analysis only) from a package `run.py --keep` kept. Each ground-truth",
        "box is matched to the highest-scoring detection of its tag with IoU >= 0.5. Bias = mean offset of a side",
        "(left, top, right, bottom; a fraction of the true box's width or height, positive = right or down);",
        "spread = its standard deviation. `trained on` = the images the detector trained on, `inner validation` =",
        "the pipeline's held-back 15 % (training side, never trained on), `test` = the benchmark's test split.",
        "",
        "| data | domain | images | matched / boxes | IoU median | share IoU >= 0.75 | bias l / t / r / b | spread l / t / r / b | package mAP@0.5:0.95 | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, g in r["groups"].items():
            if not g.get("matched"):
                continue
            bias = " / ".join(f"{g['bias'][s]:+.3f}" for s in SIDES)
            spread = " / ".join(f"{g['spread'][s]:.3f}" for s in SIDES)
            lines.append(f"| {r['data']} ({name}) | {r['domain']} | {g['images']} | {g['matched']} / {g['boxes']} | "
                         f"{g['iou_median']:.3f} | {g['iou_at_0.75']:.2f} | {bias} | {spread} | "
                         f"{r['map50_95']:.3f} | {r['date']} |")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", choices=("fork-scissors", "fruit", "raccoon"))
    parser.add_argument("--domain", help="the domain the kept package was trained with, when run.py was given one")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    row = measure(args.data, args.domain)
    import run as bench

    bench.record(ROWS, row)
    write_table()


if __name__ == "__main__":
    main()
