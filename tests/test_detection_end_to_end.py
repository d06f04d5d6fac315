"""Detection end to end through the CLI on a tiny generated dataset (Custom Vision regions layout).

A pretrained backbone trains for a few seconds only: the test checks the plumbing (package,
metrics keys, ONNX export parity, predict JSON with boxes), not the accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DETECTION_FIXTURE_STEPS, draw_scene, draw_scenes
from falconet.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("det")
    out = root / "runs" / "shapes"
    _run("train", str(draw_scenes(root / "data", 15)), "--out", str(out), "--budget", "20s")
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


def test_predictor_applies_the_box_voting_its_manifest_names(detector: Path, tmp_path: Path) -> None:
    """New packages record box voting and the runtime applies it; a package without the entry
    (written before voting existed) keeps plain NMS."""
    import shutil

    import falconet
    from falconet.runtime.postprocess import BOX_VOTE_IOU, decode_detections

    if not (detector / "model.onnx").is_file():  # when run on its own
        _run("export", str(detector), "--format", "onnx")
    photo = tmp_path / "scene.jpg"
    draw_scene(photo, "disc", 998)
    post = json.loads((detector / "manifest.json").read_text())["output"]["postprocess"]
    assert post["box_vote_iou"] == BOX_VOTE_IOU
    old = tmp_path / "old-package"
    shutil.copytree(detector, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("box_vote_iou", "box_vote_power"):
        del manifest["output"]["postprocess"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for package, vote in ((detector, post["box_vote_iou"]), (old, None)):
        predictor = falconet.load(package, backend="onnx")
        boxes, scores = predictor.run(predictor.preprocess(photo)[None])[:2]
        expected = decode_detections(boxes[0], scores[0], 0.01, post["nms_iou"], post["max_detections"],
                                     vote_iou=vote, vote_power=post["box_vote_power"])
        got = predictor.predict(photo)
        assert [(p.tag_index, round(p.probability, 6)) for p in got] == [(c, round(s, 6)) for c, s, *_ in expected]
        for p, (_, _, x1, y1, x2, y2) in zip(got, expected):
            assert p.bounding_box.to_xyxy() == pytest.approx((x1, y1, x2, y2), abs=1e-6)


def test_a_step_count_replaces_the_clock(detection_package: Path) -> None:
    """TrainRequest.detector_steps trains exactly that many steps and the manifest says so (the
    session fixture is trained this way so that it is the same model on any machine)."""
    training = json.loads((detection_package / "manifest.json").read_text())["training"]
    assert training["detector_steps"] == DETECTION_FIXTURE_STEPS
    assert training["history"]["steps"] == DETECTION_FIXTURE_STEPS
    assert training["history"]["recipe"]["steps"] == DETECTION_FIXTURE_STEPS


def test_advanced_mode_chooses_among_checkpoints_on_an_inner_split(tmp_path: Path) -> None:
    """Advanced detection with >= 30 training images keeps 15 % of them back and scores each
    checkpoint there; a short run that passes several checkpoint fractions in one step scores once."""
    from falconet.training.pipeline import TrainRequest, train_package

    result = train_package(TrainRequest(data=draw_scenes(tmp_path / "data", 20), out=tmp_path / "package",
                                        mode="advanced", detector_steps=6))
    split, history = result.manifest.training["split"], result.history
    assert split["method"] == "holdout" and split["train_images"] == 32
    assert history["images"] == 27  # 5 of the 32 validate the checkpoints
    steps = [c["step"] for c in history["checkpoints"]]
    assert steps == sorted(set(steps)) and steps[-1] == history["steps"] == 6, steps
    assert all({"map50", "map50_95", "kept_earlier"} <= set(c) for c in history["checkpoints"])
    assert not history["checkpoints"][0]["kept_earlier"]
    replaced = [c for c in history["checkpoints"] if not c["kept_earlier"]]
    assert history["best_checkpoint"] == replaced[-1]
