"""Which average of a detector's weights scores best on the test split: the evidence behind the EMA horizon.

Analysis only, never a published figure. One run trains the advanced recipe exactly as the
pipeline does (the inner 15 % validation split held out and used for the checkpoint choice, the
pipeline's budget, the same clock) while several averages of the same trajectory are kept beside
the shipped one, so the comparison between them is paired: same data, same steps, same noise.

- ``ema-hlX``: an exponential moving average whose half-life is X % of the run (the shipped
  recipe uses 5 %, and that model is the one the trainer returns); ``ema-hl0`` is the last
  step's raw weights.
- ``swa-lastX``: the plain mean of the weights over the last X % of the steps (stochastic
  weight averaging over the low-learning-rate tail of the cosine schedule).
- ``ema-hl5 + mirror view``: the shipped weights with the test-time mirror view (each image and
  its mirror image, outputs averaged: twice the inference), which ``general-detection`` uses.

Each is scored on the benchmark's test split with the runtime's post-processing.

    FALCONET_DATASETS=/work/shared/datasets python benchmarks/weight_averaging.py raccoon --seed 0

Appends to benchmarks/results/weight_averaging.jsonl and rewrites
benchmarks/results/weight_averaging.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
ROWS = OUT / "weight_averaging.jsonl"
TABLE = OUT / "weight_averaging.md"
#: the detection sets; each trains with the budget benchmarks/run.py gives its advanced run
DATA = ("fork-scissors", "fruit", "raccoon")
#: half-lives as a multiple of the shipped one (5 % of the run); 0 = the raw weights
HALF_LIFE_RATIOS = {"ema-hl0": 0.0, "ema-hl2.5": 0.5, "ema-hl10": 2.0, "ema-hl20": 4.0}
#: uniform averages over the last part of the schedule
SWA_TAILS = {"swa-last25": 0.25, "swa-last50": 0.5}
#: the shipped weights scored with the mirror view as well (two passes, see the detector's flip_tta)
MIRROR = "ema-hl5 + mirror view"


def averaging_ema(base: type, progress: dict[str, int]) -> type:
    """A subclass of the trainer's EMA that keeps the other averages of the same trajectory.

    ``progress`` carries the trainer's current estimate of the total step count (from its
    progress reports), which the tail averages need to know when to start."""
    import torch

    class AveragingEMA(base):  # type: ignore[misc, valid-type]
        def __init__(self, model: torch.nn.Module) -> None:
            self.others: dict[str, Any] = {}
            super().__init__(model)
            for name in [*HALF_LIFE_RATIOS, *SWA_TAILS]:
                self.others[name] = {"model": copy.deepcopy(self.shadow), "pairs": [], "count": 0}

        def track(self, model: torch.nn.Module) -> None:
            super().track(model)
            live = dict([*model.named_parameters(), *model.named_buffers()])
            for other in self.others.values():
                tensors = dict([*other["model"].named_parameters(), *other["model"].named_buffers()])
                other["pairs"] = [(tensors[n].data, live[n].detach()) for n in self.names]

        @torch.no_grad()
        def update(self) -> None:
            super().update()
            warm = (1 + self.updates) / (10 + self.updates)
            base_log = math.log(self.decay)  # the trainer sets the shipped decay as it goes
            for name, other in self.others.items():
                if name in HALF_LIFE_RATIOS:
                    ratio = HALF_LIFE_RATIOS[name]
                    # the shipped decay is 0.5 ** (1 / h); a half-life ratio * h has log-decay log(d) / ratio.
                    # The shorter horizons keep the shipped warm-up cap; a longer one is capped by the
                    # plain mean of every step so far, which no average can exceed
                    cap = warm if ratio <= 1 else self.updates / (self.updates + 1)
                    d = 0.0 if ratio == 0 else min(cap, math.exp(base_log / ratio))
                else:
                    total = max(1, progress.get("total", 0))
                    if self.updates < (1.0 - SWA_TAILS[name]) * total:
                        # not in the tail (yet): the early estimates of the total are short, so a
                        # mean started on them is dropped and begins again when the tail comes
                        other["count"] = 0
                        continue
                    other["count"] += 1
                    d = 1.0 - 1.0 / other["count"]  # the running plain mean
                for s, p in other["pairs"]:
                    s.mul_(d).add_(p, alpha=1 - d)

    return AveragingEMA


def run_averages(data: str, seed: int, budget_s: float | None = None) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(HERE))
    import run as bench
    from falconet.core.preprocess import InputContract, preprocess
    from falconet.training import detection_trainer as trainer
    from falconet.training.domains import get_domain
    from falconet.training.metrics.detection import evaluate_detections
    from falconet.training.pipeline import detection_inner_split, read_dataset

    progress: dict[str, int] = {}
    made: list[Any] = []
    base = trainer._EMA
    averaging = averaging_ema(base, progress)

    def ema_factory(model: torch.nn.Module) -> Any:
        ema = averaging(model)
        made.append(ema)
        return ema

    def on_progress(event: dict) -> None:
        if event.get("phase") == "train":
            progress["total"] = int(event["total"])

    domain = get_domain("general-compact", "detection")
    budget_s = budget_s or bench.RUNS[f"{data}-advanced"]["budget"]
    trainer._EMA = ema_factory
    try:
        with tempfile.TemporaryDirectory() as work:
            train_root, test_root = bench._prepare_split(data, Path(work))
            train, test = read_dataset(train_root), read_dataset(test_root, for_training=False)
            samples, inner_val = detection_inner_split(list(train.samples), seed)
            model, history = trainer.train_detector(
                samples, train.labels, backbone=domain.backbone, input_size=domain.input_size,
                budget_s=budget_s, mode="advanced", val=inner_val, seed=seed, progress=on_progress)
            contract = InputContract(domain.input_size, domain.input_size, resize="stretch")
            test_samples = list(test.samples)
            images = [preprocess(s.path, contract) for s in test_samples]
            truth = [[b for b in s.boxes if b.label in train.labels] for s in test_samples]
    finally:
        trainer._EMA = base

    def score(net: torch.nn.Module) -> dict[str, float]:
        found = trainer.predict_detector(net.to(memory_format=torch.contiguous_format).eval(), images)
        named = [[(train.labels[c], s, *box) for (c, s, *box) in dets] for dets in found]
        m = evaluate_detections(truth, named, train.labels)
        return {"map50": round(float(m["map50"]), 4), "map50_95": round(float(m["map50_95"]), 4)}

    ema = made[0]
    kept_last = history["best_checkpoint"]["step"] == history["steps"]
    scores = {"ema-hl5 (shipped)": score(model)}
    scores.update({name: score(other["model"]) for name, other in ema.others.items()})
    model.set_mirror_view(True)  # the shipped weights with the test-time mirror view, also paired
    scores[MIRROR] = score(model)
    model.set_mirror_view(False)
    return {"data": data, "seed": seed, "budget_s": budget_s, "steps": history["steps"], "kept_last_checkpoint": kept_last,
            "swa_steps": {n: ema.others[n]["count"] for n in SWA_TAILS}, "scores": scores,
            "machine": bench.machine()}


def write_table() -> None:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()] if ROWS.exists() else []
    names = ["ema-hl5 (shipped)", *HALF_LIFE_RATIOS, *SWA_TAILS, MIRROR]
    lines = [
        "## Averages of the same detector's weights, scored on the test split",
        "",
        "Written by `benchmarks/weight_averaging.py` (analysis only). Each row is one training run of the advanced",
        "recipe as the pipeline runs it; every column is a different average of that run's weights, so the columns",
        "compare paired. ema-hlX = exponential moving average with a half-life of X % of the run (hl5 is the shipped",
        "model, hl0 the raw last weights); swa-lastX = plain mean of the weights over the last X % of the steps;",
        "the last column scores the shipped weights with the test-time mirror view (two passes per image).",
        "Cells: mAP@0.5 / mAP@0.5:0.95.",
        "",
        "| data | seed | steps | " + " | ".join(names) + " | machine | date |",
        "|---" * (len(names) + 5) + "|",
    ]
    change: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells = " | ".join(f"{r['scores'][n]['map50']:.3f} / {r['scores'][n]['map50_95']:.3f}" if n in r["scores"]
                           else "-" for n in names)
        lines.append(f"| {r['data']} | {r['seed']} | {r['steps']} | {cells} | {r['machine']} | {r['date']} |")
        for n in names[1:]:
            if n in r["scores"]:
                change[r["data"]][n].append(r["scores"][n]["map50_95"] - r["scores"][names[0]]["map50_95"])
    if change:
        lines += ["", "Mean change of mAP@0.5:0.95 against the shipped model (runs):", ""]
        for data, by_name in sorted(change.items()):
            parts = ", ".join(f"{n} {sum(v) / len(v):+.4f} ({len(v)})" for n, v in by_name.items())
            lines.append(f"- {data}: {parts}")
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", choices=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, help="seconds (default: what run.py gives the advanced run)")
    parser.add_argument("--rows", type=Path, default=ROWS, help="where to append the row (a smoke run: elsewhere)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    row = run_averages(args.data, args.seed, args.budget)
    import run as bench

    bench.record(args.rows, row)
    if args.rows == ROWS:
        write_table()


if __name__ == "__main__":
    main()
