"""The test-time mirror view (``flip_tta``, the ``general`` domain) lives in the graph: every
runtime must give the torch model's answer, and the answer must be the mean over both views.

Exports the formats whose converters see the extra graph ops differently: ONNX (Slice/Concat
/Reshape), TFLite int8 (the reversal inside the quantized part), Core ML (structure only).
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
