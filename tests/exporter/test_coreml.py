"""Core ML export: the saved .mlpackage is read back from disk and its structure checked.

Core ML cannot run on Linux, so these tests check what an iOS app relies on (image input, labels,
outputs, the NMS stage, unscaled pixels, the op list) and that the manifest never claims a
measured parity for the file.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import copy_package

pytest.importorskip("coremltools")

TASKS = ("multiclass", "multilabel", "detection")


@pytest.fixture(scope="module")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One Core ML export per task, through the registry (shared by the tests below)."""
    from falconet.exporter.registry import export

    packages = {}
    for task in TASKS:
        package = copy_package(request.getfixturevalue(f"{task}_package"), tmp_path_factory.mktemp(f"coreml-{task}"))
        export(package, ["coreml"])
        packages[task] = package
    return packages


def _spec(package: Path) -> Any:
    import coremltools as ct

    return ct.utils.load_spec(str(package / "model.mlpackage"))


def _program_ops(program: Any) -> list[Any]:
    function = program.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def _classifier_labels(program: Any) -> list[str]:
    """The strings of the classify op's label list, found without the exporter's own helpers."""
    ops = _program_ops(program)
    (classify,) = [op for op in ops if op.type == "classify"]
    argument = classify.inputs["classes"].arguments[0]
    if argument.HasField("value"):
        value = argument.value
    else:
        (const,) = [op for op in ops if op.type == "const" and op.outputs[0].name == argument.name]
        value = const.attributes["val"]
    return [v.immediateValue.tensor.strings.values[0] for v in value.immediateValue.list.values]


def _image_input(spec: Any) -> Any:
    first = spec.description.input[0]
    assert first.name == "image" and first.type.WhichOneof("Type") == "imageType"
    return first.type.imageType


@pytest.mark.parametrize("task", TASKS)
def test_manifest_says_parity_not_measured(exported: dict[str, Path], task: str) -> None:
    from falconet.core.manifest import load_manifest

    package = exported[task]
    manifest = load_manifest(package)  # verifies the sha256 of every file inside the .mlpackage too
    entry = manifest.exports["coreml"]
    parity = entry["parity"]
    assert parity["measured"] is False
    assert "macOS" in parity["reason"] and "within_tolerance" not in parity and "max_abs_diff" not in parity
    checks = parity["structural_checks"]
    assert checks["labels"] == manifest.labels and checks["labels_match_manifest"] is True
    assert "not measured" in checks["numeric_parity"]
    assert entry["file"] == "model.mlpackage" and (package / entry["file"]).is_dir()
    inside = sorted(p.relative_to(package).as_posix() for p in (package / "model.mlpackage").rglob("*") if p.is_file())
    assert entry["extra_files"] == inside and len(inside) >= 3
    assert all(name in manifest.files for name in inside)
    assert entry["vision"]["imageCropAndScaleOption"] == ("scaleFill" if task == "detection" else "centerCrop")


def test_multiclass_is_a_classifier_with_the_labels(exported: dict[str, Path]) -> None:
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(exported["multiclass"])
    spec = _spec(exported["multiclass"])
    assert spec.WhichOneof("Type") == "mlProgram"
    image = _image_input(spec)
    assert (image.width, image.height) == (manifest.input.width, manifest.input.height)
    assert image.ColorSpace.Name(image.colorSpace) == "RGB"
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    assert outputs == {"classLabel": "stringType", "probabilities": "dictionaryType"}
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "probabilities"
    assert _classifier_labels(spec) == manifest.labels
    assert spec.description.metadata.userDefined["com.apple.coreml.model.preview.type"] == "imageClassifier"

    checks = manifest.exports["coreml"]["parity"]["structural_checks"]
    saved = Counter(op.type for op in _program_ops(spec) if op.type != "const")
    assert saved == Counter({k: v for k, v in checks["op_histogram"].items() if k != "const"})
    assert saved["conv"] > 10 and saved["softmax"] == 1 and saved["classify"] == 1
    assert checks["ops_supported_on_all_compute_units"] is True and checks["ops_outside_all_compute_units"] == []


def test_multilabel_keeps_sigmoid_array_and_labels_in_metadata(exported: dict[str, Path]) -> None:
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(exported["multilabel"])
    spec = _spec(exported["multilabel"])
    assert spec.WhichOneof("Type") == "mlProgram"
    assert not spec.description.predictedFeatureName  # not a Core ML classifier: it would assume one label
    (output,) = spec.description.output
    assert output.name == "probabilities" and output.type.WhichOneof("Type") == "multiArrayType"
    assert list(output.type.multiArrayType.shape) == [1, len(manifest.labels)]
    assert json.loads(spec.description.metadata.userDefined["labels"]) == manifest.labels
    ops = Counter(op.type for op in _program_ops(spec))
    assert ops["sigmoid"] == 1 and "softmax" not in ops and "classify" not in ops
    assert "metadata" in manifest.exports["coreml"]["labels_in"]


def test_detection_is_a_pipeline_ending_in_nms(exported: dict[str, Path]) -> None:
    from falconet.core.manifest import load_manifest

    manifest = load_manifest(exported["detection"])
    post = manifest.output["postprocess"]
    spec = _spec(exported["detection"])
    assert spec.WhichOneof("Type") == "pipeline"
    detector, nms_stage = spec.pipeline.models
    assert detector.WhichOneof("Type") == "mlProgram" and nms_stage.WhichOneof("Type") == "nonMaximumSuppression"

    image = _image_input(spec)
    assert (image.width, image.height) == (manifest.input.width, manifest.input.height)
    optional = {i.name: (i.type.WhichOneof("Type"), i.type.isOptional) for i in spec.description.input[1:]}
    assert optional == {"iouThreshold": ("doubleType", True), "confidenceThreshold": ("doubleType", True)}

    anchors, classes = manifest.output["shapes"][1][1], len(manifest.labels)
    raw = {o.name: list(o.type.multiArrayType.shape) for o in detector.description.output}
    assert raw == {"raw_confidence": [anchors, classes], "raw_coordinates": [anchors, 4]}
    final = {o.name: [[r.lowerBound, r.upperBound] for r in o.type.multiArrayType.shapeRange.sizeRanges]
             for o in spec.description.output}
    limit = post["max_detections"]
    assert final == {"confidence": [[0, limit], [classes, classes]], "coordinates": [[0, limit], [4, 4]]}

    nms = nms_stage.nonMaximumSuppression
    assert nms.iouThreshold == pytest.approx(post["nms_iou"])
    assert nms.confidenceThreshold == pytest.approx(post["score_threshold"])
    assert nms.pickTop.perClass is True
    assert list(nms.stringClassLabels.vector) == manifest.labels
    assert (nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName) == ("raw_confidence", "raw_coordinates")
    assert (nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName) == ("confidence", "coordinates")
    assert spec.description.metadata.userDefined["com.apple.coreml.model.preview.type"] == "objectDetector"

    checks = manifest.exports["coreml"]["parity"]["structural_checks"]
    assert checks["pipeline_stages"] == ["mlProgram", "nonMaximumSuppression"]
    assert checks["image_scaling"]["pixels_reach_network_unscaled"] is True
    assert checks["ops_supported_on_all_compute_units"] is True
    # the pipeline's weights live in the package under the name the program points to
    assert set(checks["weight_files"]["files"]) == {"Data/com.apple.CoreML/weights/0-weight.bin"}


def test_checks_refuse_a_package_that_breaks_the_contract(exported: dict[str, Path]) -> None:
    """The structural checks can fail: other labels, another NMS threshold or another op list."""
    from dataclasses import replace

    from falconet.core.errors import ExportError
    from falconet.core.manifest import load_manifest
    from falconet.exporter.coreml_target import verify_package

    for task in ("multiclass", "detection"):
        manifest = load_manifest(exported[task])
        path = exported[task] / "model.mlpackage"
        ops = manifest.exports["coreml"]["parity"]["structural_checks"]["op_histogram"]
        assert verify_package(path, manifest, ops)["labels"] == manifest.labels
        with pytest.raises(ExportError, match="labels") as err:
            verify_package(path, replace(manifest, labels=manifest.labels[::-1]), ops)
        assert err.value.code == "CoreMLStructureMismatch"
        with pytest.raises(ExportError, match="ops"):
            verify_package(path, manifest, {**ops, "conv": ops["conv"] + 1})
    manifest = load_manifest(exported["detection"])
    other = {**manifest.output, "postprocess": {**manifest.output["postprocess"], "nms_iou": 0.6}}
    with pytest.raises(ExportError, match="iou_threshold"):
        verify_package(exported["detection"] / "model.mlpackage", replace(manifest, output=other),
                       manifest.exports["coreml"]["parity"]["structural_checks"]["op_histogram"])


def test_reexport_replaces_the_package_and_hashes_guard_it(multiclass_package: Path, tmp_path: Path) -> None:
    """The registry sets the old .mlpackage folder aside, records every file inside, and a damaged
    weight file is caught when the package is loaded."""
    from falconet.core.errors import PackageIntegrityError
    from falconet.core.manifest import load_manifest
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path)
    export(package, ["coreml"])
    first = load_manifest(package).exports["coreml"]["extra_files"]
    export(package, ["coreml"])
    manifest = load_manifest(package)
    assert manifest.exports["coreml"]["extra_files"] == first
    assert not list(package.glob(".*previous*"))
    weights = package / "model.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PackageIntegrityError, match="weight.bin"):
        load_manifest(package)


def test_fp16_program_casts_the_image_and_keeps_the_contract(multiclass_package: Path, tmp_path: Path) -> None:
    """The same module writes a float16 program (for the Neural Engine) when asked for fp16."""
    from falconet.core.manifest import load_manifest
    from falconet.exporter.context import ExportContext
    from falconet.exporter.coreml_target import export
    from falconet.training.weights import load_model

    package = copy_package(multiclass_package, tmp_path)
    manifest = load_manifest(package)
    model = load_model(package)
    entry = export(model, manifest, package, ExportContext("coreml-fp16", "fp16", package, manifest, model))
    assert entry["compute_precision"] == "float16" and "Neural Engine" in entry["compute_units"]
    checks = entry["checks"]
    assert checks["labels"] == manifest.labels
    assert checks["image_scaling"]["casts_before_network"] == 1 and checks["image_scaling"]["first_op"] == "sub"
    spec = _spec(package)
    ops = _program_ops(spec)
    (cast,) = [op for op in ops if any(a.name == "image" for arg in op.inputs.values() for a in arg.arguments)]
    assert cast.type == "cast"
    assert _classifier_labels(spec) == manifest.labels
