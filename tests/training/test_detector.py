"""The compact detector: shapes and ranges, a few training steps, ONNX parity.

Synthetic data (coloured rectangles on noise) and random weights keep it fast; the accuracy of
the real recipe is measured in benchmarks/, not here.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from falconet.data.types import Box, Sample
from falconet.runtime.postprocess import decode_detections as postprocess
from falconet.training.detection_trainer import clearly_better, predict_detector, train_detector
from falconet.training.detector import Detector, build_detector

SIZE = 64
LABELS = ["red", "blue"]


def _synthetic(tmp_path, count: int = 10, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        w, h = rng.randint(80, 120), rng.randint(80, 120)
        pixels = np_rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        boxes = []
        for label in rng.sample(LABELS, rng.randint(1, 2)):
            bw, bh = rng.randint(w // 4, w // 2), rng.randint(h // 4, h // 2)
            x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
            pixels[y:y + bh, x:x + bw] = (230, 30, 30) if label == "red" else (30, 30, 230)
            boxes.append(Box(label, x / w, y / h, (x + bw) / w, (y + bh) / h))
        path = tmp_path / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(path, boxes=boxes, width=w, height=h))
    return samples


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny inputs gain nothing from threads, and a busy shared CPU makes them much slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    samples = _synthetic(tmp_path_factory.mktemp("det"))
    torch.manual_seed(0)
    model, history = train_detector(
        samples, LABELS, backbone="efficientnet-lite0", input_size=SIZE, budget_s=60.0, mode="quick",
        val=samples[:4], pretrained=False,
        # a step-defined schedule keeps the test independent of how busy the CPU is
        overrides={"batch_size": 8, "steps": 20, "warmup": 0.1, "threads": 1},
    )
    return model, history, samples


def test_outputs_have_documented_shapes_and_ranges():
    model = build_detector("efficientnet-lite0", 2, SIZE, pretrained=False).eval()
    n = sum((SIZE // s) ** 2 for s in (8, 16, 32))
    with torch.no_grad():
        boxes, scores = model(torch.rand(3, 3, SIZE, SIZE) * 255)
    assert boxes.shape == (3, n, 4) and scores.shape == (3, n, 2)
    assert float(boxes.min()) >= 0.0 and float(boxes.max()) <= 1.0
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    assert model.input_size == SIZE and model.num_classes == 2 and model.backbone_name == "efficientnet-lite0"


def test_rebuilds_from_config():
    model = build_detector("mobilenet-v2", 3, 96, pretrained=False).eval()
    clone = Detector.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(1, 3, 96, 96) * 255
    with torch.no_grad():
        a, b = model(x), clone(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_training_lowers_the_loss(trained):
    model, history, _ = trained
    losses = [r["loss"] for r in history["loss"]]
    assert history["steps"] == 20, history
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert history["checkpoints"] and "map50" in history["checkpoints"][-1]
    # the kept checkpoint is the latest one that did not lose to the one kept before it
    latest_winner = [c for c in history["checkpoints"] if not c["kept_earlier"]][-1]
    assert history["best_checkpoint"] == latest_winner
    assert not model.training


def test_an_earlier_checkpoint_is_kept_only_when_clearly_better():
    rng = np.random.default_rng(1)
    truth, exact, shifted, one_missed = [], [], [], []
    for i in range(30):
        x, y = rng.uniform(0.05, 0.5, size=2)
        truth.append([Box("a", x, y, x + 0.4, y + 0.4)])
        exact.append([("a", 0.9, x, y, x + 0.4, y + 0.4)])
        # half the boxes placed off their object (IoU ~0.3): a clearly worse model
        dx = 0.2 if i % 2 else 0.0
        shifted.append([("a", 0.9, x + dx, y, x + dx + 0.4, y + 0.4)])
        one_missed.append([] if i == 0 else exact[-1])  # a single image's difference
    draws = np.random.default_rng(0).integers(0, 30, size=(200, 30))
    assert clearly_better(exact, shifted, truth, ["a"], draws)
    assert not clearly_better(shifted, exact, truth, ["a"], draws)
    assert not clearly_better(exact, one_missed, truth, ["a"], draws)
    assert not clearly_better(exact, exact, truth, ["a"], draws)


def test_predict_gives_sorted_normalised_detections(trained):
    model, _, samples = trained
    results = predict_detector(model, [s.path for s in samples[:3]], score_threshold=0.0, max_detections=5)
    assert len(results) == 3
    for dets in results:
        assert len(dets) == 5
        scores = [d[1] for d in dets]
        assert scores == sorted(scores, reverse=True)
        for c, s, x1, y1, x2, y2 in dets:
            assert c in (0, 1) and 0.0 <= s <= 1.0
            assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0


def test_onnx_export_matches_torch(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model, _, samples = trained
    path = tmp_path / "det.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["boxes", "scores"],
        dynamic_axes={"image": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}},
    )
    graph = onnx.load(str(path)).graph
    # decoding uses precomputed constants only: nothing in the graph depends on the input's shape
    assert not [n.op_type for n in graph.node if n.op_type in ("Shape", "NonZero", "NonMaxSuppression")]
    x = np.random.default_rng(1).uniform(0, 255, (3, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        tb, ts = (t.numpy() for t in model(torch.from_numpy(x)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ob, os_ = session.run(None, {"image": x})
    assert ob.shape == tb.shape and os_.shape == ts.shape
    np.testing.assert_allclose(ob, tb, atol=1e-4)
    np.testing.assert_allclose(os_, ts, atol=1e-4)


def test_postprocess_is_class_aware_and_thresholded():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]],
                     dtype=np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.005, 0.3]], dtype=np.float32)
    dets = postprocess(boxes, scores, score_threshold=0.01, iou=0.45)
    # the second class-0 box overlaps the first and goes; the class-1 box at the same place stays
    assert [(c, round(s, 3)) for c, s, *_ in dets] == [(0, 0.9), (1, 0.7), (1, 0.3)]
    assert dets[0][2:] == pytest.approx((0.1, 0.1, 0.5, 0.5))
    assert len(postprocess(boxes, scores, max_detections=2)) == 2
    assert postprocess(boxes, np.zeros_like(scores)) == []


def test_distance_bin_head_option():
    """The optional distribution head: the distance is the mean of its bins, the distribution
    focal loss trains it, its config rebuilds it, and it cannot be built too short to reach."""
    from falconet.training.detector import detection_loss

    torch.manual_seed(0)
    model = build_detector("efficientnet-lite0", 2, SIZE, pretrained=False, box_bins=4)
    assert model.config()["box_bins"] == 4 and "box_bins" not in build_detector(
        "efficientnet-lite0", 2, SIZE, pretrained=False).config()
    x = torch.rand(2, 3, SIZE, SIZE) * 255
    cls, ltrb, quality, bins = model.forward_raw(x, with_bins=True)
    assert bins.shape == (2, model.num_anchors, 4, 5)
    strides = model.anchor_strides.view(1, -1, 1)
    expected = (torch.softmax(bins, -1) * torch.arange(5.0)).sum(-1) * strides
    assert torch.allclose(ltrb, expected, atol=1e-4)
    gt = torch.tensor([[[8.0, 8.0, 40.0, 48.0]], [[20.0, 4.0, 60.0, 30.0]]])
    loss, parts = detection_loss(model, (cls, ltrb, quality, bins), gt, torch.tensor([[0], [1]]))
    loss.backward()
    assert parts["dfl"] > 0 and model.reg_out.weight.grad.abs().sum() > 0
    clone = Detector.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    model.eval()
    clone.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], clone(x)[0])
    with pytest.raises(ValueError, match="cannot reach"):
        build_detector("efficientnet-lite0", 2, 320, pretrained=False, box_bins=4)


def test_quality_target_option():
    """``quality_target="iou"`` (the default) trains the quality logit towards each positive's box
    IoU, and ``"centreness"`` towards centreness (the loss once shadowed this option with the
    quality tensor, so the IoU was never used)."""
    import torch.nn.functional as F

    from falconet.training.detector import assign_targets, box_iou_pairs, detection_loss

    torch.manual_seed(0)
    model = build_detector("efficientnet-lite0", 2, SIZE, pretrained=False)
    x = torch.rand(2, 3, SIZE, SIZE) * 255
    outputs = model.forward_raw(x)
    gt = torch.tensor([[[8.0, 8.0, 40.0, 48.0]], [[20.0, 4.0, 60.0, 30.0]]])
    labels = torch.tensor([[0], [1]])
    _, by_iou = detection_loss(model, outputs, gt, labels)
    _, by_centre = detection_loss(model, outputs, gt, labels, quality_target="centreness")
    match, fg = assign_targets(model, gt, labels, "task", outputs[0], outputs[1])
    bi, ai = fg.nonzero(as_tuple=True)
    iou, _ = box_iou_pairs(model.decode(outputs[1])[bi, ai], gt[bi, match[bi, ai]])
    expected = F.binary_cross_entropy_with_logits(outputs[2][bi, ai, 0], iou.detach().clamp(0, 1))
    assert by_iou["quality"] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert by_centre["quality"] != pytest.approx(by_iou["quality"], rel=1e-3)
    with pytest.raises(ValueError, match="quality_target"):
        detection_loss(model, outputs, gt, labels, quality_target="IoU")


def _ltrb_for(model: Detector, box: list[float]) -> torch.Tensor:
    """Distances from every location to the sides of ``box``: a prediction of exactly that box."""
    x1, y1, x2, y2 = box
    cx, cy = model.centres[:, 0], model.centres[:, 1]
    return torch.stack([cx - x1, cy - y1, x2 - cx, y2 - cy], -1).clamp(min=0.5)


def test_task_aligned_assignment_follows_the_predictions():
    """Task-aligned assignment (the default) makes the locations that already predict a box well
    its positives: at most _TASK_TOPK of them, all inside it; a location outside the box is never
    a positive however well it predicts; each location learns one box."""
    from falconet.training import detector as det

    model = build_detector("efficientnet-lite0", 2, 128, pretrained=False)
    n = model.num_anchors
    box_a, box_b = [8.0, 8.0, 72.0, 72.0], [40.0, 40.0, 120.0, 112.0]
    gt = torch.tensor([[box_a, box_b, [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 1, -1]])
    cx, cy = model.centres[:, 0], model.centres[:, 1]
    inside_a = (cx > 8) & (cx < 72) & (cy > 8) & (cy < 72)
    inside_b = (cx > 40) & (cx < 120) & (cy > 40) & (cy < 112)
    # every location predicts a loose box, except a few chosen ones that predict box A exactly
    ltrb = torch.full((1, n, 4), 6.0)
    exact = torch.nonzero(inside_a & ~inside_b).flatten()[:3]
    outside = torch.nonzero(~inside_a & ~inside_b).flatten()[:2]
    for j in torch.cat([exact, outside]):
        ltrb[0, j] = _ltrb_for(model, box_a)[j]
    cls = torch.full((1, n, 2), -4.0)
    cls[0, exact, 0] = 4.0
    cls[0, outside, 0] = 4.0
    match, fg = det.assign_targets(model, gt, labels, "task", cls, ltrb)
    assert all(int(match[0, j]) == 0 for j in exact)
    assert not fg[0, outside].any()
    assert 1 <= int((match[0] == 0).sum()) <= det._TASK_TOPK
    assert 1 <= int((match[0] == 1).sum()) <= det._TASK_TOPK
    assert bool(inside_a[match[0] == 0].all()) and bool(inside_b[match[0] == 1].all())
    assert not (match[0] == 2).any()  # padding learns nothing
    with pytest.raises(ValueError, match="needs the class logits"):
        det.assign_targets(model, gt, labels, "task")
    with pytest.raises(ValueError, match="assigner"):
        det.assign_targets(model, gt, labels, "yolo")


def test_atss_and_fcos_assignment_pick_the_level_by_box_size():
    """ATSS (an option) and FCOS (the former default) put a small box on the finest level and a
    box filling the input on the coarsest; a box too small to hold any location centre still gets
    one positive, the nearest location, under every method."""
    from falconet.training import detector as det

    model = build_detector("efficientnet-lite0", 2, 256, pretrained=False)
    n = model.num_anchors
    gt = torch.tensor([[[100.0, 100.0, 124.0, 124.0], [4.0, 4.0, 252.0, 252.0], [60.0, 60.0, 62.0, 62.0]]])
    labels = torch.tensor([[0, 1, 0]])
    cls, ltrb = torch.zeros((1, n, 2)), torch.full((1, n, 4), 8.0)
    for method in det.ASSIGNERS:
        match, fg = det.assign_targets(model, gt, labels, method, cls, ltrb)
        for g in range(3):
            assert int((match[0] == g).sum()) >= 1, (method, g)
        if method == "task":
            continue  # chooses by the predictions, not by size
        strides = model.anchor_strides[:, 0]
        assert set(strides[match[0] == 0].tolist()) == {8.0}, method
        assert 32.0 in set(strides[match[0] == 1].tolist()), method
        assert 8.0 not in set(strides[match[0] == 1].tolist()), method


def test_freeze_stride_leaves_those_backbone_stages_untouched(tmp_path):
    """``freeze_stride`` (an A/B option; the recipe freezes up to stride 8): the stages it names
    must come back exactly as they started, and the later ones must have learned."""
    samples = _synthetic(tmp_path, count=6)
    model, _ = train_detector(
        samples, LABELS, backbone="efficientnet-lite0", input_size=SIZE, budget_s=60.0, mode="quick",
        pretrained=False, seed=0,
        overrides={"batch_size": 4, "steps": 3, "warmup": 0.1, "threads": 1, "freeze_stride": 16},
    )
    torch.manual_seed(0)  # what the trainer does before building its network
    start = build_detector("efficientnet-lite0", len(LABELS), SIZE, pretrained=False)
    frozen = len(start.frozen_prefix(16))
    assert len(start.frozen_prefix(8)) < frozen < len(start.backbone.stage_modules())
    for index, (after, before) in enumerate(zip(model.backbone.stage_modules(), start.backbone.stage_modules())):
        pairs = list(zip(after.state_dict().values(), before.state_dict().values()))
        unchanged = all(torch.equal(a, b) for a, b in pairs)
        assert unchanged == (index < frozen), index


def test_training_assigns_as_fcos_during_the_warm_up_then_task_aligned(tmp_path, monkeypatch):
    """The first ASSIGN_WARMUP of the schedule assigns by centre sampling (the predictions are
    still noise), the rest by the loss's default, task-aligned assignment. The loss is wrapped to
    record what each step asked for and still computes the real loss."""
    import inspect

    from falconet.training import detection_trainer as trainer
    from falconet.training import detector as det

    asked: list[str] = []
    real_loss = trainer.detection_loss

    def recording_loss(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asked.append(kwargs.get("assigner", "default"))
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "detection_loss", recording_loss)
    samples = _synthetic(tmp_path, count=4)
    _, history = train_detector(
        samples, LABELS, backbone="efficientnet-lite0", input_size=SIZE, budget_s=60.0, mode="quick",
        pretrained=False, seed=0, overrides={"batch_size": 2, "steps": 10, "warmup": 0.1, "threads": 1},
    )
    warm = round(trainer.ASSIGN_WARMUP * 10)
    assert asked == ["fcos"] * warm + ["default"] * (10 - warm)
    assert history["recipe"]["assign_warmup"] == trainer.ASSIGN_WARMUP
    assert inspect.signature(det.detection_loss).parameters["assigner"].default == "task"


def test_whole_views_show_the_image_as_the_runtime_does_with_its_boxes(tmp_path):
    """A whole view (the end of the schedule, ``whole_from``) is the uncropped image stretched to
    the input size, mirrored or not, with its boxes following the mirror."""
    from falconet.training.detection_trainer import Augmenter, _Item

    pixels = np.zeros((90, 160, 3), dtype=np.uint8)
    pixels[:, 80:] = 255  # the right half is white, and the box covers it
    item = _Item(Image.fromarray(pixels), np.array([[0.5, 0.0, 1.0, 1.0]], dtype=np.float32), np.array([0]))
    augmenter = Augmenter([item], 64, random.Random(0))
    mirrored = 0
    for _ in range(20):
        array, boxes, classes = augmenter.sample(0, mosaic=False, whole=True)
        assert array.shape == (64, 64, 3)
        assert classes.tolist() == [0] and boxes.shape == (1, 4)
        if boxes[0, 0] == 0.0:  # mirrored: the box and the white half are on the left
            mirrored += 1
            np.testing.assert_allclose(boxes[0], [0.0, 0.0, 0.5, 1.0])
            inside, outside = array[:, :32], array[:, 32:]
        else:
            np.testing.assert_allclose(boxes[0], [0.5, 0.0, 1.0, 1.0])
            inside, outside = array[:, 32:], array[:, :32]
        assert inside.min() > outside.max()  # colour jitter keeps the order of intensities
    assert 0 < mirrored < 20


def test_training_ends_on_whole_views_from_whole_from(tmp_path, monkeypatch):
    from falconet.training import detection_trainer as trainer

    asked: list[bool] = []
    real_sample = trainer.Augmenter.sample

    def recording_sample(self, index, mosaic, whole=False):  # noqa: ANN001, ANN202
        asked.append(whole)
        return real_sample(self, index, mosaic, whole)

    monkeypatch.setattr(trainer.Augmenter, "sample", recording_sample)
    samples = _synthetic(tmp_path, count=4)
    train_detector(samples, LABELS, backbone="efficientnet-lite0", input_size=SIZE, budget_s=60.0, mode="advanced",
                   pretrained=False, seed=0,
                   overrides={"batch_size": 2, "steps": 10, "warmup": 0.1, "threads": 1, "whole_from": 0.8})
    assert asked == [False] * 16 + [True] * 4
