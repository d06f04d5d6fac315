"""The onnx-gpu backend (the Jetson image's runtime path) on a machine without a GPU.

No GPU exists on the machines these tests run on, and the onnxruntime installed here is the CPU
build: what runs is the real CPU fallback of onnx-gpu on a real exported model.onnx. The only
stand-in is the list of providers handed to ``gpu_providers`` (a GPU build's list, which cannot be
obtained here); the GPU path itself was run on a lent GPU machine, see devices/jetson-orin-nano.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import COLOURS, copy_package, draw
from falconet.cli import app
from falconet.runtime.backends import REGISTRY, create_backend
from falconet.runtime.backends.onnxruntime_backend import GPU_ORDER, gpu_providers
from falconet.runtime.devices import load_device

runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_package(multiclass_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only model.onnx exported: onnx-gpu must find the fp32 file under the ``onnx`` entry."""
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path_factory.mktemp("onnx-gpu-pkg"))
    export(package, ["onnx"])
    return package


def test_provider_order_keeps_only_what_onnxruntime_offers() -> None:
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = gpu_providers(jetson, "/cache/trt")
    assert [p if isinstance(p, str) else p[0] for p in chosen] == list(GPU_ORDER)
    trt_options = chosen[0][1]
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_engine_cache_path"] == "/cache/trt"
    assert gpu_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "trt_engine_cache_path" not in gpu_providers(jetson)[0][1]
    import onnxruntime

    here = gpu_providers(onnxruntime.get_available_providers())
    assert here == ["CPUExecutionProvider"], "this machine has no GPU build of onnxruntime"


def test_onnx_gpu_falls_back_to_the_cpu_with_the_same_answers(onnx_package: Path) -> None:
    import falconet
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(onnx_package, verify=False)
    gpu = create_backend("onnx-gpu", onnx_package, manifest)
    cpu = create_backend("onnx", onnx_package, manifest)
    assert gpu.name == "onnx-gpu"
    assert "CPUExecutionProvider (model.onnx" in gpu.description, gpu.description
    assert gpu.provider == "CPUExecutionProvider"

    batch = np.random.default_rng(0).uniform(0, 255, (2, *cpu.session.get_inputs()[0].shape[1:])).astype(np.float32)
    for a, b in zip(gpu.run(batch), cpu.run(batch), strict=True):
        np.testing.assert_array_equal(a, b)

    predictor = falconet.load(onnx_package, backend="onnx-gpu")
    assert predictor.info()["backend"] == gpu.description


def test_a_gpu_provider_that_does_not_exist_here_is_not_reported_as_used(onnx_package: Path) -> None:
    """Asking this CPU build for TensorRT and CUDA: onnxruntime runs on the CPU and we say so."""
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(onnx_package, verify=False)
    with pytest.warns(UserWarning, match="not in available provider names"):
        backend = create_backend("onnx-gpu", onnx_package, manifest,
                                 providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert backend.provider == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider did not start" in backend.description, backend.description


def test_predict_cli_with_onnx_gpu_matches_onnx(onnx_package: Path, tmp_path: Path) -> None:
    photo = draw(tmp_path / "green.jpg", COLOURS["green"], 4242, size=(96, 80))
    answers = {}
    for backend in ("onnx", "onnx-gpu"):
        result = runner.invoke(app, ["predict", str(onnx_package), str(photo), "--json", "--backend", backend])
        assert result.exit_code == 0, result.output
        answers[backend] = json.loads(result.stdout.splitlines()[-1])["predictions"]
    assert answers["onnx-gpu"] == answers["onnx"]
    assert answers["onnx"][0]["tagName"] == "green"


def test_the_jetson_profile_selects_onnx_gpu() -> None:
    profile = load_device("jetson-orin-nano")
    assert profile["backend"] == "onnx-gpu" and "onnx-gpu" in REGISTRY
    # onnx-gpu runs model.onnx, so the profile must export it.
    assert "onnx" in profile["formats"]


def test_a_package_without_model_onnx_says_what_to_export(multiclass_package: Path, tmp_path: Path) -> None:
    from falconet.core.errors import BackendUnavailableError
    from falconet.core.manifest import load_manifest

    package = copy_package(multiclass_package, tmp_path)
    with pytest.raises(BackendUnavailableError, match="--format onnx"):
        create_backend("onnx-gpu", package, load_manifest(package, verify=False))
