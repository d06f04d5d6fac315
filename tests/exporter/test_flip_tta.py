"""The test-time mirror view (``flip_tta``, the ``general`` domains) lives in the graph: every
runtime must give the torch model's answer, and the answer must be the mean over both views.

Exports the formats whose converters see the extra graph ops differently: ONNX (Slice/Concat
/Reshape), TFLite int8 (the reversal inside the quantized part), Core ML (structure only). The
detector's mirror view maps each location's outputs back onto the grid, so it is checked against
an index computation of its own and by its symmetry: the mirror image's answer is the mirrored answer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import colour_tags_package


def test_forward_is_the_mean_of_the_image_and_its_mirror() -> None:
    from falconet.training.classifier import ClassifierNet

    torch.manual_seed(0)
    net = ClassifierNet("mobilenet-v2", 3, False, 64, flip_tta=True).eval()  # ImageNet weights: varied features
    with torch.no_grad():
        net.head.weight.normal_(0, 0.05)  # logits of a few units: neither uniform nor saturated
    x = torch.rand(2, 3, 64, 64) * 255
    x[..., :32] *= 0.2  # a dark left half: the mirror image differs
    with torch.no_grad():
        both = net(x)
        plain = torch.softmax(net.logits(x), dim=1)
        mirrored = torch.softmax(net.logits(torch.flip(x, dims=[3])), dim=1)
    assert both.shape == (2, 3)
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(both, plain, atol=1e-4)  # the mirror view really counts
    again = ClassifierNet.from_config(net.config())
    assert again.flip_tta is True


@pytest.fixture(scope="module")
def tta_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_tags_package(tmp_path_factory.mktemp("flip-tta"), "general")


def test_general_domain_exports_with_the_mirror_view(tta_package: Path) -> None:
    import falconet
    from falconet.core.manifest import load_manifest
    from falconet.exporter.parity import parity_samples
    from falconet.exporter.registry import export

    entries = export(tta_package, ["onnx", "tflite-int8", "coreml"])
    for name in ("onnx", "tflite-int8"):
        parity = entries[name]["parity"]
        assert parity["measured"] is True and parity["within_tolerance"] is True, (name, parity)
        assert parity["top1_agreement"] == 1.0, (name, parity)
    assert entries["onnx"]["parity"]["max_abs_diff"] < 1e-4
    assert entries["coreml"]["parity"]["measured"] is False and entries["coreml"]["parity"]["structural_checks"]

    manifest = load_manifest(tta_package)
    samples, _ = parity_samples(tta_package, manifest)
    reference = falconet.load(tta_package, backend="torch")
    onnx = falconet.load(tta_package, backend="onnx")
    batch = np.stack([reference.preprocess(s.path) for s in samples])
    expected = reference.run(batch)[0]
    assert np.allclose(onnx.run(batch)[0], expected, atol=1e-4)


# ------------------------------------------------------------------ detection


def _mirrored_locations(sizes: tuple[int, ...]) -> torch.Tensor:
    """For each location of the detector's grids (row-major, level after level), the index of the
    location in the same row and the mirrored column."""
    index, start = [], 0
    for n in sizes:
        for row in range(n):
            index.extend(start + row * n + (n - 1 - col) for col in range(n))
        start += n * n
    return torch.tensor(index)


def _mirror_boxes(boxes: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], dim=-1)


def _one_view(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One view's boxes (normalised, not yet clipped to the image) and scores."""
    cls, ltrb, quality = net.forward_raw(x)
    return net.decode(ltrb) / net.input_size, torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(quality))


@pytest.fixture(scope="module")
def mirror_detector() -> torch.nn.Module:
    from falconet.training.detector import build_detector

    torch.manual_seed(0)
    net = build_detector("mobilenet-v2", 2, 96, pretrained=True, flip_tta=True).eval()  # varied features
    with torch.no_grad():  # logits of a few units: the two views disagree visibly
        for conv, std in ((net.cls_out, 0.3), (net.quality_out, 0.3), (net.reg_out, 0.05)):
            conv.weight.normal_(0, std)
        net.cls_out.bias.zero_()
    return net


def _scene() -> torch.Tensor:
    x = torch.rand(2, 3, 96, 96) * 255
    x[..., :40] *= 0.2  # a dark left part: the mirror image differs
    return x


def test_detector_forward_is_the_mean_of_the_image_and_its_mirror(mirror_detector: torch.nn.Module) -> None:
    from falconet.training.detector import Detector

    net, x = mirror_detector, _scene()
    mirror = _mirrored_locations(net.level_sizes)
    with torch.no_grad():
        boxes, scores = net(x)
        plain_boxes, plain_scores = _one_view(net, x)
        flipped_boxes, flipped_scores = _one_view(net, torch.flip(x, dims=[3]))
    # the mirror view's answer for location i sits at i's mirrored location, its box mirrored back;
    # the two boxes are averaged before the result is clipped to the image
    back_boxes, back_scores = _mirror_boxes(flipped_boxes[:, mirror]), flipped_scores[:, mirror]
    assert boxes.shape == plain_boxes.shape and scores.shape == plain_scores.shape
    assert torch.allclose(scores, (plain_scores + back_scores) / 2, atol=1e-6)
    assert torch.allclose(boxes, torch.clamp((plain_boxes + back_boxes) / 2, 0, 1), atol=1e-5)
    assert not torch.allclose(scores, plain_scores, atol=1e-3)  # the mirror view really counts
    again = Detector.from_config(net.config())
    assert again.flip_tta is True and "flip_tta" not in Detector.from_config(
        {**net.config(), "flip_tta": False}).config()


def test_detector_answer_to_the_mirror_image_is_the_mirrored_answer(mirror_detector: torch.nn.Module) -> None:
    net, x = mirror_detector, _scene()
    mirror = _mirrored_locations(net.level_sizes)
    with torch.no_grad():
        boxes, scores = net(x)
        m_boxes, m_scores = net(torch.flip(x, dims=[3]))
        one_scores = _one_view(net, x)[1]
        one_m_scores = _one_view(net, torch.flip(x, dims=[3]))[1]
    assert torch.allclose(m_scores[:, mirror], scores, atol=1e-6)
    assert torch.allclose(_mirror_boxes(m_boxes[:, mirror]), boxes, atol=1e-5)
    # a single view has no such symmetry (so this check can fail)
    assert not torch.allclose(one_m_scores[:, mirror], one_scores, atol=1e-3)


def test_the_mirror_view_switches_on_and_off_on_trained_weights(mirror_detector: torch.nn.Module) -> None:
    from falconet.training.detector import Detector

    x = _scene()
    net = Detector.from_config({**mirror_detector.config(), "flip_tta": False})
    net.load_state_dict(mirror_detector.state_dict())
    net.eval()
    with torch.no_grad():
        plain = net(x)
        net.set_mirror_view(True)
        mirrored = net(x)
        want = mirror_detector(x)
        net.set_mirror_view(False)
        again = net(x)
    assert net.config().get("flip_tta") is None and torch.equal(plain[1], again[1])
    assert torch.equal(mirrored[0], want[0]) and torch.equal(mirrored[1], want[1])
    assert not torch.allclose(mirrored[1], plain[1], atol=1e-3)


@pytest.fixture(scope="module")
def mirror_detection_package(detection_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained test detector with the mirror view switched on (same weights)."""
    from conftest import copy_package
    from falconet.core.manifest import load_manifest
    from falconet.training.detector import Detector
    from falconet.training.weights import WEIGHTS, load_model, save_weights

    package = copy_package(detection_package, tmp_path_factory.mktemp("mirror-detector"))
    one_view = load_model(package)
    net = Detector.from_config({**one_view.config(), "flip_tta": True})
    net.load_state_dict(one_view.state_dict())
    save_weights(net.eval(), package)
    manifest = load_manifest(package, verify=False)
    manifest.record_file(package, WEIGHTS)
    manifest.save(package)
    return package


def test_detector_with_the_mirror_view_exports(mirror_detection_package: Path) -> None:
    import falconet
    from falconet.core.manifest import load_manifest
    from falconet.exporter.parity import parity_samples
    from falconet.exporter.registry import export

    package = mirror_detection_package
    entries = export(package, ["onnx", "openvino", "tflite", "coreml"])
    for name in ("onnx", "openvino", "tflite"):
        parity = entries[name]["parity"]
        assert parity["measured"] is True and parity["within_tolerance"] is True, (name, parity)
    assert entries["coreml"]["parity"]["measured"] is False and entries["coreml"]["parity"]["structural_checks"]

    samples, _ = parity_samples(package, load_manifest(package))
    reference = falconet.load(package, backend="torch")
    assert reference.backend.model.flip_tta is True
    for backend in ("onnx", "tflite"):
        runtime = falconet.load(package, backend=backend)
        for sample in samples[:4]:
            got, want = runtime.predict(sample.path, threshold=0.2), reference.predict(sample.path, threshold=0.2)
            assert [p.tag_name for p in got] == [p.tag_name for p in want], backend
            for a, b in zip(got, want):
                assert np.allclose(a.bounding_box.to_xyxy(), b.bounding_box.to_xyxy(), atol=1e-3)
                assert abs(a.probability - b.probability) <= 1e-4
