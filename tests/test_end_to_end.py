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


def test_failed_parity_writes_nothing(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from falconet.exporter import parity

    model_before = (trained / "model.onnx").read_bytes()
    manifest_before = (trained / "manifest.json").read_text()
    monkeypatch.setattr(parity, "tolerance_for", lambda precision, task: -1.0)  # no difference is small enough
    result = runner.invoke(app, ["export", str(trained), "--format", "onnx"])
    assert result.exit_code == 2 and "ExportParityFailed" in result.output
    assert (trained / "model.onnx").read_bytes() == model_before
    assert (trained / "manifest.json").read_text() == manifest_before
    assert not list(trained.glob(".*previous"))


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
    if not (trained / "model.onnx").exists():  # when run alone, without the export test before it
        _run("export", str(trained))
    photo = draw(tmp_path / "x.png", COLOURS["blue"], 77)
    code = (
        "import sys, falconet\n"
        f"p = falconet.load({str(trained)!r}, backend='onnx')\n"
        f"r = p.predict({str(photo)!r}); b = p.predict_batch([{str(photo)!r}, open({str(photo)!r}, 'rb').read()])\n"
        "assert r[0].tag_name == 'blue' and len(b) == 2, r\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("module", ["falconet", "falconet.cli", "falconet.runtime"])
def test_import_is_light(module: str) -> None:
    # falconet.cli: `falconet --help` and every command pay for it (20 s under qemu on a Pi image)
    code = f"import sys, {module}; heavy = {{'numpy', 'torch', 'onnxruntime', 'PIL'}} & set(sys.modules); print(sorted(heavy))"
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
    assert result.exit_code == 2 and "not a Falconet model package" in " ".join(result.output.split())  # rich wraps long paths


def test_multilabel_csv_and_advanced_mode(tmp_path: Path) -> None:
    rows = ["image,tags"]
    seed = 900
    for tags, colour in (("red", (220, 40, 40)), ("blue", (40, 60, 220)), ("red;blue", (200, 40, 200)), ("", (40, 200, 60))):
        for i in range(6):
            name = f"{tags.replace(';', '_') or 'none'}_{i}.jpg"
            draw(tmp_path / "imgs" / name, colour, seed)
            seed += 1
            rows.append(f"imgs/{name},{tags}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ml"
    _run("train", str(tmp_path / "tags.csv"), "--out", str(out), "--mode", "advanced", "--budget", "40s",
         "--domain", "general-compact-mobilenet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "classification-multilabel" and manifest["labels"] == ["blue", "red"]
    assert manifest["output"]["activation"] == "sigmoid"
    assert "accuracy" not in manifest["metrics"]
    assert manifest["metrics"]["images"] == manifest["training"]["split"]["evaluated_images"] > 0
    history = manifest["training"]["history"]
    assert history["method"] == "advanced" and history["fine_tune"]["epochs_log"][0]["epoch"] == 0
    _run("export", str(out))
    photo = draw(tmp_path / "purple.jpg", (200, 40, 200), 4242)
    preds = json.loads(_run("predict", str(out), str(photo), "--json"))["predictions"]
    assert {p["tagName"] for p in preds if p["probability"] > 0.5} == {"red", "blue"}
