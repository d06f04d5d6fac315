"""From a data folder to a model package: read, validate, split, train, evaluate, write.

The reported metrics are always measured on images the reported model did not train on: a
validation folder when given, else a seeded stratified held-out split, else (very small tags)
k-fold cross-validation, in which case the shipped model is trained on every image and the
metrics are those of the k models that each left a fold out, as the hosted service does.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from falconet.core.errors import DatasetError, FalconetError
from falconet.core.labels import write_labels
from falconet.core.manifest import DETECTION, LABELS, MANIFEST, Manifest, write_json_atomic
from falconet.core.preprocess import STRETCH, InputContract
from falconet.data.splits import choose_evaluation, kfold, stratified_split
from falconet.data.types import Dataset, Sample
from falconet.runtime.postprocess import BOX_VOTE_IOU, BOX_VOTE_POWER
from falconet.runtime.predictor import Predictor
from falconet.training.domains import Domain, get_domain
from falconet.training.metrics.rescore import metrics_from_rows
from falconet.training.torch_backend import TorchBackend
from falconet.training.weights import WEIGHTS, save_weights

Progress = Callable[[dict[str, Any]], None]
EVALUATION = "evaluation.json"
HOLDOUT_FRACTION = 0.2
KFOLD_K = 5
DETECTION_QUICK_BUDGET_S = 100.0


@dataclass
class TrainRequest:
    data: Path
    out: Path
    val: Path | None = None
    domain: str = "general-compact"
    mode: str = "quick"
    budget_s: float | None = None
    task: str | None = None
    format: str | None = None
    seed: int = 0
    threshold: float = 0.5
    overlap: float = 0.5
    project: str = ""
    #: detection only: train exactly this many steps instead of to the clock, so the same data and
    #: seed give the same detector on a slow machine as on a fast one (tests, reproducible comparisons)
    detector_steps: int | None = None


@dataclass
class TrainResult:
    package: Path
    manifest: Manifest
    dataset: Dataset
    history: dict[str, Any] = field(default_factory=dict)


def is_detection_data(path: Path, task: str | None, fmt: str | None) -> bool:
    if task is not None:
        return task == DETECTION
    if fmt is not None:
        return True
    from falconet.data.detection import detect_format

    try:
        detect_format(path)
        return True
    except FalconetError:
        return False


def read_dataset(path: Path, task: str | None = None, fmt: str | None = None, for_training: bool = True) -> Dataset:
    """Read a classification or detection dataset, whichever the files are.

    Images-per-tag minimums apply to training data only; data to measure on may be small.
    """
    path = Path(path)
    if is_detection_data(path, task, fmt):
        from falconet.data.detection import read_detection

        return read_detection(path, fmt) if for_training else read_detection(path, fmt, min_images_per_tag=0)
    from falconet.data.classification import read_classification

    return read_classification(path, task=task) if for_training else read_classification(path, task=task, min_images_per_tag=1)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def contract_for(domain: Domain) -> InputContract:
    resize = STRETCH if domain.kind == "detection" else "center-crop"
    return InputContract(domain.input_size, domain.input_size, resize=resize)


def output_contract(task: str, labels: Sequence[str], model: Any) -> dict[str, Any]:
    if task == DETECTION:
        return {
            "names": ["boxes", "scores"],
            "shapes": [["batch", model.num_anchors, 4], ["batch", model.num_anchors, len(labels)]],
            "boxes": "normalised x1, y1, x2, y2 in [0, 1] of the whole image (the input is stretched, "
                     "so they map straight back to the original image)",
            "scores": "per-class probability of each candidate box",
            "postprocess": {"score_threshold": 0.01, "nms": "class-aware", "nms_iou": 0.45, "max_detections": 100,
                            "box_vote_iou": BOX_VOTE_IOU, "box_vote_power": BOX_VOTE_POWER, "in_graph": False},
        }
    return {
        "names": ["probabilities"],
        "shapes": [["batch", len(labels)]],
        "activation": "sigmoid" if task.endswith("multilabel") else "softmax",
    }


# ------------------------------------------------------------------ training of one model

def detection_inner_split(samples: Sequence[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): the images an advanced detector trains on, and the 15 % it keeps back
    to choose among its checkpoints (benchmarks/checkpoint_trajectory.py trains on the same ones)."""
    inner, inner_val = stratified_split(samples, 0.15, seed + 1)
    return [samples[i] for i in inner], [samples[i] for i in inner_val]


def _train_model(request: TrainRequest, samples: Sequence[Sample], dataset: Dataset, domain: Domain,
                 budget_s: float | None, progress: Progress | None, bank: Any = None,
                 bank_images: Sequence[int] | None = None) -> tuple[Any, dict[str, Any]]:
    mode, seed = request.mode, request.seed
    if domain.kind == "detection":
        from falconet.training.detection_trainer import train_detector

        budget = budget_s if budget_s is not None else (DETECTION_QUICK_BUDGET_S if mode == "quick" else domain.default_budget_s)
        val = None
        samples = list(samples)
        if mode == "advanced" and len(samples) >= 30:
            samples, val = detection_inner_split(samples, seed)
        return train_detector(samples, dataset.labels, backbone=domain.backbone, input_size=domain.input_size,
                              budget_s=budget, mode=mode, val=val, seed=seed, progress=progress,
                              flip_tta=domain.flip_tta,
                              overrides={"steps": request.detector_steps} if request.detector_steps else None)
    from falconet.training.classification_trainer import train_classifier

    result = train_classifier(samples, dataset.labels, dataset.task, domain, mode=mode, budget_s=budget_s, seed=seed,
                              progress=progress, bank=bank, bank_images=bank_images)
    return result.model, result.history


# ------------------------------------------------------------------ evaluation

def evaluate_predictor(predictor: Predictor, samples: Sequence[Sample], labels: Sequence[str], task: str,
                       threshold: float = 0.5, overlap: float = 0.5, root: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-image results of ``predictor`` on labelled samples."""
    images = [s.path for s in samples]
    per_image: list[dict[str, Any]] = []
    if task == DETECTION:
        from falconet.training.metrics.detection import evaluate_detections

        found = predictor.predict_batch(images, threshold=0.0)
        predictions = [[(p.tag_name, p.probability, *p.bounding_box.to_xyxy()) for p in preds] for preds in found]  # type: ignore[union-attr]
        truth = [list(s.boxes) for s in samples]
        metrics = evaluate_detections(truth, predictions, list(labels), threshold=threshold, overlap=overlap)
        for sample, preds in zip(samples, predictions):
            per_image.append({"image": _relative(sample.path, root) if root else str(sample.path),
                              "truth": [[b.label, b.x1, b.y1, b.x2, b.y2] for b in sample.boxes],
                              "predicted": [list(p) for p in preds if p[1] >= 0.05]})
        metrics["task"] = task
        return metrics, per_image
    from falconet.training.classification_trainer import targets_matrix
    from falconet.training.metrics.classification import classification_metrics

    found = predictor.predict_batch(images)
    probabilities = np.zeros((len(samples), len(labels)), dtype=np.float64)
    for row, preds in enumerate(found):
        for p in preds:
            probabilities[row, p.tag_index] = p.probability
    targets = targets_matrix(samples, labels)
    metrics = classification_metrics(targets, probabilities, labels, task, threshold)
    for sample, row in zip(samples, probabilities):
        per_image.append({"image": _relative(sample.path, root) if root else str(sample.path),
                          "truth": list(sample.labels), "probabilities": [round(float(p), 6) for p in row]})
    return metrics, per_image


# ------------------------------------------------------------------ the whole job

def train_package(request: TrainRequest, progress: Progress | None = None,
                  report: Callable[[Dataset], None] | None = None) -> TrainResult:
    """Train, evaluate honestly and write a model package at ``request.out``."""
    started = time.monotonic()
    dataset = read_dataset(request.data, request.task, request.format)
    kind = "detection" if dataset.task == DETECTION else "classification"
    domain = get_domain(request.domain, kind)
    val_dataset = None
    if request.val is not None:
        val_dataset = read_dataset(request.val, dataset.task if kind == "detection" else request.task or dataset.task,
                                   request.format, for_training=False)
        unknown = set(val_dataset.labels) - set(dataset.labels)
        if unknown:
            raise DatasetError(f"The validation data has tags the training data lacks: {', '.join(sorted(unknown))}.",
                               code="BadRequestUnknownTag")
    if report:
        report(dataset)
    _check_out(request.out)

    samples = dataset.samples
    root = Path(dataset.source) if Path(dataset.source).is_dir() else Path(dataset.source).parent
    contract = contract_for(domain)
    if val_dataset is not None:
        method = "validation-folder"
    else:
        method = choose_evaluation(dataset.counts())
    history: dict[str, Any] = {}
    split: dict[str, Any] = {"method": method, "seed": request.seed}

    def predictor_for(model: Any) -> Predictor:
        manifest = _manifest(request, dataset, domain, contract, model)
        return Predictor(manifest, TorchBackend(None, manifest, model=model))

    if method == "kfold":
        k = max(2, min(KFOLD_K, min(dataset.counts().values())))
        folds = kfold(samples, k, request.seed)
        per_image: list[dict[str, Any]] = [{} for _ in samples]
        fold_metrics = []
        fold_budget = None if request.budget_s is None else request.budget_s / (k + 1)
        bank = None
        if domain.kind == "classification" and request.mode == "quick":
            from falconet.training.classification_trainer import build_bank

            bank = build_bank(samples, domain, request.seed, progress)
        for f, held in enumerate(folds):
            held_set = set(held)
            train_idx = [i for i in range(len(samples)) if i not in held_set]
            if progress:
                progress({"phase": f"fold {f + 1}/{k}", "step": 0, "total": 1})
            model, _ = _train_model(request, [samples[i] for i in train_idx], dataset, domain, fold_budget, progress,
                                    bank, train_idx)
            metrics, rows = evaluate_predictor(predictor_for(model), [samples[i] for i in held], dataset.labels,
                                               dataset.task, request.threshold, request.overlap, root)
            fold_metrics.append(metrics)
            for i, row in zip(held, rows):
                per_image[i] = row
        # Pooled: the per-image rows of every fold scored as one set, as a Performance page re-scores them.
        metrics = metrics_from_rows(per_image, dataset.labels, dataset.task, request.threshold, request.overlap)
        from falconet.training.metrics.classification import summarize_folds

        metrics.update(summarize_folds(fold_metrics))
        metrics["folds"] = k
        split.update({"k": k, "folds": [[_relative(samples[i].path, root) for i in fold] for fold in folds]})
        model, history = _train_model(request, samples, dataset, domain, fold_budget, progress,
                                      bank, list(range(len(samples))) if bank else None)
        split["note"] = (f"Metrics are pooled over {k}-fold cross-validation (each image scored by a model that did "
                         "not train on it); the shipped model was then trained on all images.")
        eval_samples = samples
    else:
        if method == "holdout":
            train_idx, held_idx = stratified_split(samples, HOLDOUT_FRACTION, request.seed)
            train_samples = [samples[i] for i in train_idx]
            eval_samples = [samples[i] for i in held_idx]
            split.update({"fraction": HOLDOUT_FRACTION, "source": str(root.resolve()),
                          "held_out": [_relative(s.path, root) for s in eval_samples]})
            eval_root = root
        else:
            assert val_dataset is not None
            train_samples = samples
            eval_samples = val_dataset.samples
            eval_root = Path(val_dataset.source)
            split.update({"source": str(eval_root.resolve()),
                          "held_out": [_relative(s.path, eval_root) for s in eval_samples]})
        model, history = _train_model(request, train_samples, dataset, domain, request.budget_s, progress)
        if progress:
            progress({"phase": "evaluate", "step": 0, "total": len(eval_samples)})
        metrics, per_image = evaluate_predictor(predictor_for(model), eval_samples, dataset.labels, dataset.task,
                                                request.threshold, request.overlap, eval_root)
        split["train_images"] = len(train_samples)
    split["evaluated_images"] = len(eval_samples)

    manifest = _manifest(request, dataset, domain, contract, model)
    manifest.metrics = metrics
    manifest.training = {
        "mode": request.mode,
        "budget_s": request.budget_s,
        **({"detector_steps": request.detector_steps} if request.detector_steps else {}),
        "seconds": round(time.monotonic() - started, 1),
        "data": {"source": str(Path(dataset.source).resolve()), "format": dataset.format,
                 "images": len(samples), "per_tag": dataset.counts(),
                 "issues": [{"kind": i.kind, "path": i.path, "message": i.message, "severity": i.severity}
                            for i in dataset.issues]},
        "split": split,
        "history": history,
    }
    package = _write_package(request.out, manifest, model, per_image, metrics, dataset)
    return TrainResult(package, manifest, dataset, history)


def _manifest(request: TrainRequest, dataset: Dataset, domain: Domain, contract: InputContract, model: Any) -> Manifest:
    return Manifest(task=dataset.task, domain=domain.name, labels=list(dataset.labels), input=contract,
                    output=output_contract(dataset.task, dataset.labels, model), project=request.project,
                    backbone=domain.backbone)


def _check_out(out: Path) -> None:
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise FalconetError(f"{out} exists and is not a Falconet model package; choose another --out.",
                            code="OutputExists", status=409)


def _write_package(out: Path, manifest: Manifest, model: Any, per_image: list[dict[str, Any]],
                   metrics: dict[str, Any], dataset: Dataset) -> Path:
    """Write into a temporary sibling and swap it in, so a failure never leaves half a package."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        save_weights(model, tmp)
        write_labels(tmp / LABELS, manifest.labels)
        write_json_atomic(tmp / EVALUATION, {"task": manifest.task, "labels": manifest.labels, "images": per_image})
        figures = _figures(tmp, metrics, per_image, manifest)
        for name in [WEIGHTS, LABELS, EVALUATION, *figures]:
            manifest.record_file(tmp, name)
        manifest.save(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _figures(directory: Path, metrics: dict[str, Any], per_image: list[dict[str, Any]], manifest: Manifest) -> list[str]:
    from falconet.training.plots import confusion_matrix_png, pr_curves_png

    written = []
    if "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        confusion_matrix_png(cm["rows_true_columns_predicted"], cm["labels"], directory / "confusion_matrix.png")
        written.append("confusion_matrix.png")
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if manifest.task == DETECTION:
        from falconet.training.metrics.detection import detection_pr_curves

        truth = [[_box(b) for b in r["truth"]] for r in per_image]
        predictions = [[tuple(p) for p in r["predicted"]] for r in per_image]
        for tag, curve in detection_pr_curves(truth, predictions, manifest.labels).items():
            curves[tag] = (np.asarray(curve["precision"]), np.asarray(curve["recall"]))
    else:
        from falconet.training.metrics.classification import pr_curve

        probabilities = np.array([r["probabilities"] for r in per_image])
        for c, tag in enumerate(manifest.labels):
            if tag in metrics["per_tag"]:
                positives = np.array([tag in r["truth"] for r in per_image])
                precision, recall, _ = pr_curve(probabilities[:, c], positives)
                curves[tag] = (precision, recall)
    if curves:
        pr_curves_png(curves, directory / "pr_curve.png", "Precision/recall on held-out images")
        written.append("pr_curve.png")
    return written


def _box(row: list[Any]):  # noqa: ANN202
    from falconet.data.types import Box

    return Box(row[0], *row[1:5])


def load_evaluation(package_dir: Path) -> dict[str, Any]:
    return json.loads((Path(package_dir) / EVALUATION).read_text(encoding="utf-8"))
