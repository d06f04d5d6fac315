"""Every task × every export target: export, load through falconet.load, compare with torch.

One export of all formats per task (shared by the parametrized checks). Core ML cannot run on
Linux: its row checks that the manifest says parity was not measured, and that its structural
checks were recorded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import copy_package
from falconet.exporter.registry import TARGETS

TASKS = ("multiclass", "multilabel", "detection")


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from falconet.exporter.registry import export

    packages = {}
    for task in TASKS:
        package = copy_package(request.getfixturevalue(f"{task}_package"), tmp_path_factory.mktemp(f"matrix-{task}"))
        export(package, list(TARGETS))
        packages[task] = package
    return packages


def _held_out(package: Path) -> list[Path]:
    import falconet
    from falconet.exporter.parity import parity_samples

    samples, _ = parity_samples(package, falconet.load(package, backend="torch").manifest)
    return [s.path for s in samples]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list(TARGETS))
def test_export_matrix(exported: dict[str, Path], task: str, name: str) -> None:
    import falconet
    from falconet.core.manifest import load_manifest

    package = exported[task]
    manifest = load_manifest(package)  # verifies the sha256 of every recorded file
    entry = manifest.exports[name]
    parity = entry["parity"]
    if not TARGETS[name].runnable:
        assert parity["measured"] is False and parity["reason"] and parity["structural_checks"]
        return
    assert parity["measured"] is True, parity
    assert parity["within_tolerance"] is True, parity
    assert entry["precision"] == TARGETS[name].precision

    candidate = falconet.load(package, backend=name)
    reference = falconet.load(package, backend="torch")
    images = _held_out(package)[:8]
    for image in images:
        got, want = candidate.predict(image, threshold=0.3), reference.predict(image, threshold=0.3)
        if task == "detection":
            if TARGETS[name].precision == "fp32":
                assert [p.tag_name for p in got] == [p.tag_name for p in want]
                for a, b in zip(got, want):
                    assert np.allclose(a.bounding_box.to_xyxy(), b.bounding_box.to_xyxy(), atol=1e-3)
        elif TARGETS[name].precision == "fp32":
            assert [p.tag_name for p in got] == [p.tag_name for p in want]
            assert np.allclose([p.probability for p in got], [p.probability for p in want], atol=1e-4)
        else:
            top = lambda preds: max(preds, key=lambda p: p.probability).tag_name if preds else None  # noqa: E731
            assert top(got) == top(want) or task == "multilabel"


def test_reexport_forgets_files_the_new_export_does_not_write(multiclass_package: Path, tmp_path: Path) -> None:
    """A re-export whose files are named differently (another converter version, a renamed target)
    removes the old files and their manifest entries: the package still passes its integrity check."""
    import json

    from falconet.core.manifest import load_manifest
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path)
    export(package, ["onnx"])
    # make the package look like an earlier export wrote the ONNX file under another name
    (package / "model.onnx").rename(package / "model-old.onnx")
    data = json.loads((package / "manifest.json").read_text())
    data["exports"]["onnx"]["file"] = "model-old.onnx"
    data["files"]["model-old.onnx"] = data["files"].pop("model.onnx")
    (package / "manifest.json").write_text(json.dumps(data))
    assert "model-old.onnx" in load_manifest(package).files

    export(package, ["onnx"])
    manifest = load_manifest(package)  # verifies every listed file
    assert manifest.exports["onnx"]["file"] == "model.onnx"
    assert "model-old.onnx" not in manifest.files and not (package / "model-old.onnx").exists()
    assert not list(package.glob(".*previous*"))
