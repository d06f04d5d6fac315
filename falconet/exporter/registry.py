"""Export targets by name: one module per target, and the parity check after each.

Adding a target means writing one module with ``export(model, manifest, package_dir, context)``
and adding one ``Target`` line below; no target knows about another. The format names double as
runtime backend names (``falconet.load(path, backend="tflite-int8")``).
"""
from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from falconet.core.errors import ExportError, ParityError
from falconet.core.manifest import load_manifest
from falconet.exporter.context import ExportContext
from falconet.runtime.backends import create_backend
from falconet.runtime.predictor import Predictor


@dataclass(frozen=True)
class Target:
    """What a format is: the module that writes it, what runs it, and how exact it must be."""

    name: str
    module: str
    precision: str  # fp32, fp16 or int8: decides the parity tolerance
    extra: str  # the pip extra that provides the converter
    #: False where no runtime exists on this platform (Core ML on Linux): parity is not measured,
    #: the module's own structural checks are recorded instead, and the manifest says so.
    runnable: bool = True


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", "falconet.exporter.onnx_target", "fp32", "falconet[train]"),
    Target("onnx-fp16", "falconet.exporter.onnx_fp16_target", "fp16", "falconet[train]"),
    Target("onnx-int8", "falconet.exporter.onnx_int8_target", "int8", "falconet[train]"),
    Target("tflite", "falconet.exporter.tflite_target", "fp32", "falconet[tflite]"),
    Target("tflite-fp16", "falconet.exporter.tflite_target", "fp16", "falconet[tflite]"),
    Target("tflite-int8", "falconet.exporter.tflite_target", "int8", "falconet[tflite]"),
    Target("openvino", "falconet.exporter.openvino_target", "fp32", "falconet[openvino-export]"),
    Target("openvino-fp16", "falconet.exporter.openvino_target", "fp16", "falconet[openvino-export]"),
    Target("openvino-int8", "falconet.exporter.openvino_target", "int8", "falconet[openvino-export]"),
    Target("coreml", "falconet.exporter.coreml_target", "fp32", "falconet[coreml]", runnable=False),
)}


def resolve_formats(spec: str) -> list[str]:
    """'all', or a comma-separated list of format names, checked."""
    names = list(TARGETS) if spec.strip() == "all" else [f.strip() for f in spec.split(",") if f.strip()]
    unknown = [f for f in names if f not in TARGETS]
    if unknown or not names:
        raise ExportError(f"Unknown export format(s) {', '.join(unknown) or repr(spec)}; available: {', '.join(TARGETS)}, all.",
                          code="BadRequestExportFormat", status=400)
    return list(dict.fromkeys(names))


def export(package_dir: Path, formats: list[str], *, parity_data: Path | None = None, accept_degradation: bool = False,
           log: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, Any]]:
    """Export each format, measure parity against the torch model, record both in the manifest."""
    from falconet.exporter.parity import check, measure, parity_samples, tolerance_for
    from falconet.training.torch_backend import TorchBackend
    from falconet.training.weights import load_model

    package_dir = Path(package_dir)
    formats = resolve_formats(",".join(formats))
    manifest = load_manifest(package_dir)
    model = load_model(package_dir)
    reference = Predictor(manifest, TorchBackend(package_dir, manifest, model=model))
    samples, labelled = parity_samples(package_dir, manifest, parity_data)
    results = {}
    for name in formats:
        target = TARGETS[name]
        try:
            module = importlib.import_module(target.module)
        except ImportError as exc:
            raise ExportError(f"The {name} export needs {target.extra} installed ({exc}).",
                              code="ExportToolMissing", status=500) from exc
        log(f"exporting {name} ...")
        context = ExportContext(name, target.precision, package_dir, manifest, model)
        previous = manifest.exports.get(name, {})
        backups = [_set_aside(package_dir, f) for f in _files_of(previous)]
        try:
            entry = module.export(model, manifest, package_dir, context)
        except Exception:
            for backup in backups:
                _restore(backup)
            raise
        entry.setdefault("format", name)
        entry.setdefault("precision", target.precision)
        tolerance = tolerance_for(target.precision, manifest.task)
        if target.runnable:
            candidate = Predictor(manifest, create_backend(name, package_dir, manifest, export_entry=entry))
            figures = measure(reference, candidate, samples, tolerance, target.precision, labelled)
            figures.update({"measured": True, "reference": "torch fp32 (weights.pt)",
                            "runtime": getattr(candidate.backend, "description", name), "tolerance": tolerance})
            problems = check(figures, manifest.task, tolerance)
            figures["within_tolerance"] = not problems
        else:
            figures = {"measured": False, "reason": entry.get("parity_note", f"{name} cannot run on this platform."),
                       "structural_checks": entry.pop("checks", {})}
            problems = []
        entry["parity"] = figures
        if problems and not accept_degradation:
            for file in _files_of(entry):
                _discard(package_dir / file)
            for backup in backups:
                _restore(backup)
            raise ParityError(f"{name} export disagrees with the trained model on {figures['images']} held-out images: "
                              + "; ".join(problems) + ". Nothing was written; pass --accept-degradation to keep it anyway.")
        for file in _files_of(entry):
            if (package_dir / file).is_file():
                manifest.record_file(package_dir, file)
        # files of the previous export that this one did not write again are gone (set aside and
        # discarded below): a manifest that still listed them would fail its own integrity check
        for file in set(_files_of(previous)) - set(_files_of(entry)):
            manifest.files.pop(file, None)
        manifest.exports[name] = entry
        manifest.save(package_dir)
        for backup in backups:
            if backup is not None:
                _discard(backup[1])
        results[name] = entry
    return results


def _files_of(entry: dict[str, Any]) -> list[str]:
    """The file an export wrote plus any side files (OpenVINO's .bin, a Core ML package...)."""
    files = [entry["file"]] if entry.get("file") else []
    return files + [f for f in entry.get("extra_files", []) if f not in files]


def _set_aside(package_dir: Path, file: str | None) -> tuple[Path, Path] | None:
    """Move a previous export out of the way, so a failed re-export leaves the old file intact."""
    if not file or not (package_dir / file).exists():
        return None
    original = package_dir / file
    aside = original.with_name(f".{original.name}.previous")
    _discard(aside)
    original.rename(aside)
    return original, aside


def _restore(backup: tuple[Path, Path] | None) -> None:
    if backup is not None:
        original, aside = backup
        _discard(original)
        aside.rename(original)


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
