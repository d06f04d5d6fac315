"""An export whose file disagrees with the trained model is refused and leaves the package as it was.

A correct exporter never produces such a file on demand, so the test makes one the way an exporter
bug would: the real ONNX exporter writes a copy of the model whose classifier weights are negated.
Everything else is real: the registry, onnxruntime measuring parity on the held-out images, the
manifest on disk.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import copy_package
from falconet.core.errors import ParityError
from falconet.core.manifest import load_manifest, sha256_file
from falconet.exporter import onnx_target
from falconet.exporter.registry import export

_real_export = onnx_target.export  # taken before any test swaps it


def _write_damaged(model: Any, manifest: Any, package_dir: Path, context: Any = None) -> dict[str, Any]:
    """The real ONNX export of the model with its last weight matrix negated (its ranking reversed)."""
    damaged = copy.deepcopy(model)
    weight = [p for p in damaged.parameters() if p.dim() == 2][-1]
    weight.data.neg_()
    return _real_export(damaged, manifest, package_dir, context)



def _state(package: Path) -> tuple[str, str, list[str]]:
    return ((package / "manifest.json").read_text(), sha256_file(package / "model.onnx"),
            sorted(p.name for p in package.iterdir()))


def test_disagreeing_export_is_refused_and_the_previous_file_kept(multiclass_package: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    package = copy_package(multiclass_package, tmp_path)
    export(package, ["onnx"])
    before = _state(package)

    monkeypatch.setattr(onnx_target, "export", _write_damaged)
    with pytest.raises(ParityError) as refused:
        export(package, ["onnx"])
    assert refused.value.code == "ExportParityFailed"
    assert "top-1 agreement" in str(refused.value) and "--accept-degradation" in str(refused.value)
    assert _state(package) == before  # same manifest, same model.onnx, no stray or set-aside files
    load_manifest(package)  # and the package still verifies


def test_accept_degradation_keeps_the_file_with_its_honest_figures(multiclass_package: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    package = copy_package(multiclass_package, tmp_path)
    monkeypatch.setattr(onnx_target, "export", _write_damaged)
    entry = export(package, ["onnx"], accept_degradation=True)["onnx"]
    parity = entry["parity"]
    assert parity["measured"] is True and parity["within_tolerance"] is False
    assert parity["top1_agreement"] < 1.0, parity
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["exports"]["onnx"]["parity"]["within_tolerance"] is False
    assert manifest["files"]["model.onnx"]["sha256"] == sha256_file(package / "model.onnx")
