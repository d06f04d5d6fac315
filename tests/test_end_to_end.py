"""The classification slice end to end through the CLI: train -> export -> predict -> evaluate.

A real (pretrained) backbone is trained on a dozen images the test draws; the ONNX file runs in
a real onnxruntime session, and the torch-free promise is checked in a fresh interpreter.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import COLOURS, draw
from falconet.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    seed = 0
    for tag in ("red", "blue"):
        for i in range(6):
            draw(root / "photos" / tag / f"{i}.jpg", COLOURS[tag], seed)
            seed += 1
    out = root / "runs" / "colours"
    _run("train", str(root / "photos"), "--out", str(out), "--domain", "general-compact-mobilenet")
    return out


def test_train_writes_a_complete_package(trained: Path) -> None:
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["task"] == "classification-multiclass"
    assert manifest["labels"] == ["blue", "red"]
    assert (trained / "labels.txt").read_text() == "blue\nred\n"
    assert manifest["training"]["split"]["method"] == "kfold"  # 6 images a tag: too few for a held-out split
    assert manifest["metrics"]["images"] == 12 and manifest["metrics"]["accuracy"] >= 0.9
    for name in ("weights.pt", "confusion_matrix.png", "pr_curve.png", "evaluation.json"):
        assert name in manifest["files"] and (trained / name).is_file()


def test_export_records_parity_and_predict_matches(trained: Path, tmp_path: Path) -> None:
    _run("export", str(trained), "--format", "onnx")
    manifest = json.loads((trained / "manifest.json").read_text())
    parity = manifest["exports"]["onnx"]["parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] <= 1e-4 and parity["images"] == 12
    photo = draw(tmp_path / "new.jpg", COLOURS["red"], 1234)
    lines = [json.loads(l) for l in _run("predict", str(trained), str(photo), "--json").splitlines()]
    preds = lines[0]["predictions"]
    assert preds[0]["tagName"] == "red" and set(preds[0]) >= {"tagId", "tagName", "probability"}
    assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-5)
    torch_preds = json.loads(_run("predict", str(trained), str(photo), "--json", "--backend", "torch"))["predictions"]
    assert torch_preds[0]["probability"] == pytest.approx(preds[0]["probability"], abs=1e-4)


def test_evaluate_json(trained: Path, tmp_path: Path) -> None:
    for tag in ("red", "blue"):
        for i in range(5):
            draw(tmp_path / "more" / tag / f"{i}.jpg", COLOURS[tag], 500 + i + (10 if tag == "red" else 0))
    result = json.loads(_run("evaluate", str(trained), str(tmp_path / "more"), "--json"))
    for key in ("task", "images", "threshold", "accuracy", "precision", "recall", "map", "per_tag"):
        assert key in result
    assert result["images"] == 10 and result["accuracy"] == 1.0
    assert set(result["per_tag"]["red"]) >= {"precision", "recall", "ap", "images"}


def test_runtime_does_not_import_torch(trained: Path, tmp_path: Path) -> None:
    photo = draw(tmp_path / "x.png", COLOURS["blue"], 77)
    code = (
        "import sys, falconet\n"
        f"p = falconet.load({str(trained)!r})\n"
        f"r = p.predict({str(photo)!r}); b = p.predict_batch([{str(photo)!r}, open({str(photo)!r}, 'rb').read()])\n"
        "assert r[0].tag_name == 'blue' and len(b) == 2, r\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_import_falconet_is_light() -> None:
    code = "import sys, falconet; heavy = {'numpy', 'torch', 'onnxruntime', 'PIL'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_input_errors(trained: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = runner.invoke(app, ["predict", str(trained), str(text), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "BadRequestImageFormat"
    result = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "DatasetNotFound" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path), str(text)])
    assert result.exit_code == 2 and "not a Falconet model package" in result.output
