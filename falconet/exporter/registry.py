"""Export targets by name: one module per target, and the parity check after each.

Adding a target means adding a module and a line here; no target knows about another.
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Callable

from falconet.core.errors import ExportError, ParityError
from falconet.core.manifest import load_manifest
from falconet.runtime.predictor import Predictor
from falconet.runtime.backends import create_backend

#: format name -> (module, backend that runs the file, tolerance)
TARGETS: dict[str, tuple[str, str, float]] = {
    "onnx": ("falconet.exporter.onnx_target", "onnx", 1e-4),
}


def export(package_dir: Path, formats: list[str], *, parity_data: Path | None = None, accept_degradation: bool = False,
           log: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, Any]]:
    """Export each format, measure parity against the torch model, record both in the manifest."""
    from falconet.exporter.parity import check, measure, parity_images
    from falconet.training.torch_backend import TorchBackend
    from falconet.training.weights import load_model

    package_dir = Path(package_dir)
    unknown = [f for f in formats if f not in TARGETS]
    if unknown:
        raise ExportError(f"Unknown export format(s) {', '.join(unknown)}; available: {', '.join(TARGETS)}.",
                          code="BadRequestExportFormat", status=400)
    manifest = load_manifest(package_dir)
    model = load_model(package_dir)
    reference = Predictor(manifest, TorchBackend(package_dir, manifest, model=model))
    images = parity_images(package_dir, manifest, parity_data)
    results = {}
    for name in formats:
        module_name, backend, tolerance = TARGETS[name]
        module = importlib.import_module(module_name)
        log(f"exporting {name} ...")
        backup = _set_aside(package_dir, manifest.exports.get(name, {}).get("file"))
        try:
            entry = module.export(model, manifest, package_dir)
        except Exception:
            _restore(backup)
            raise
        manifest.record_file(package_dir, entry["file"]) if (package_dir / entry["file"]).is_file() else None
        manifest.exports[name] = entry
        candidate = Predictor(manifest, create_backend(backend, package_dir, manifest, file=entry["file"]))
        figures = measure(reference, candidate, images, tolerance)
        figures.update({"reference": "torch fp32 (weights.pt)", "runtime": getattr(candidate.backend, "description", backend),
                        "tolerance": tolerance})
        problems = check(figures, manifest.task, tolerance)
        figures["within_tolerance"] = not problems
        entry["parity"] = figures
        if problems and not accept_degradation:
            _discard(package_dir / entry["file"])
            _restore(backup)
            raise ParityError(f"{name} export disagrees with the trained model on {figures['images']} held-out images: "
                              + "; ".join(problems) + ". Nothing was written; pass --accept-degradation to keep it anyway.")
        manifest.save(package_dir)
        if backup is not None:
            _discard(backup[1])
        results[name] = entry
    return results


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
