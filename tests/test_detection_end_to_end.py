"""Detection end to end through the CLI on a tiny generated dataset (Custom Vision regions layout).

A pretrained backbone trains for a few seconds only: the test checks the plumbing (package,
metrics keys, ONNX export parity, predict JSON with boxes), not the accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import draw_scene
from falconet.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("det")
    regions = {}
    for t, tag in enumerate(("square", "disc")):
        for i in range(15):
            name = f"{tag}_{i}.jpg"
            regions[name] = [draw_scene(root / "data" / tag / name, tag, 100 * t + i)]
    (root / "data" / "regions.json").write_text(json.dumps(regions))
    out = root / "runs" / "shapes"
    _run("train", str(root / "data"), "--out", str(out), "--budget", "20s")
    return out


def test_detection_package_and_metrics(detector: Path) -> None:
    manifest = json.loads((detector / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["labels"] == ["disc", "square"]
    assert manifest["input"]["resize"] == "stretch"
    assert manifest["output"]["names"] == ["boxes", "scores"]
    metrics = manifest["metrics"]
    for key in ("map50", "map50_95", "precision", "recall", "per_tag"):
        assert key in metrics
    assert manifest["training"]["split"]["method"] == "holdout"


def test_detection_export_parity_and_predict(detector: Path, tmp_path: Path) -> None:
    _run("export", str(detector), "--format", "onnx")
    parity = json.loads((detector / "manifest.json").read_text())["exports"]["onnx"]["parity"]
    assert parity["within_tolerance"] and parity["raw_max_score_diff"] <= 1e-4 and parity["match_rate"] >= 0.99
    photo = tmp_path / "scene.jpg"
    draw_scene(photo, "square", 999)
    line = json.loads(_run("predict", str(detector), str(photo), "--json").splitlines()[0])
    for p in line["predictions"]:
        box = p["boundingBox"]
        assert set(box) == {"left", "top", "width", "height"}
        assert 0 <= box["left"] <= 1 and 0 <= box["left"] + box["width"] <= 1 + 1e-6
    scores = [p["probability"] for p in line["predictions"]]
    assert scores == sorted(scores, reverse=True)
    result = json.loads(_run("evaluate", str(detector), str(detector.parent.parent / "data"), "--json"))
    assert {"map50", "map50_95", "per_tag", "images"} <= set(result) and result["images"] == 30
