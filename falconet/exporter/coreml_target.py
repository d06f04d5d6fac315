"""Core ML: an ML program (.mlpackage) that an iOS/macOS app hands camera frames to through Vision.

- Input ``image``: a Core ML image (RGB, the model's width x height) with scale 1 and no bias,
  because the network normalises inside and takes plain 0-255 pixels. Vision does the resizing;
  the entry names the ``VNImageCropAndScaleOption`` that reproduces Falconet's preprocessing.
- Multiclass: a Core ML classifier (``classLabel`` + the ``probabilities`` dictionary), so Vision
  returns ``VNClassificationObservation``s. Multilabel: Core ML classifiers assume one label per
  image, so the sigmoid ``probabilities`` are a multi-array and the labels sit in the metadata.
- Detection: a pipeline of the ML program (``raw_confidence`` N x C and ``raw_coordinates`` N x 4,
  normalised centre x, centre y, width, height) and a NonMaximumSuppression model whose outputs
  ``confidence`` / ``coordinates`` are what Vision turns into ``VNRecognizedObjectObservation``s.

Core ML cannot run on Linux (``predict`` raises), so nothing here is numerically compared with the
trained model. What can be checked is checked by reading the saved package back from disk, and the
entry says plainly that numeric parity needs macOS.
"""
from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, MULTICLASS, MULTILABEL, Manifest
from falconet.core.preprocess import CENTER_CROP

PACKAGE = "model.mlpackage"
INPUT_NAME = "image"
#: the detector stage's outputs; the NMS stage turns them into Vision's ``confidence``/``coordinates``
RAW_CONFIDENCE, RAW_COORDINATES = "raw_confidence", "raw_coordinates"
CONFIDENCE, COORDINATES = "confidence", "coordinates"
IOU_INPUT, CONFIDENCE_INPUT = "iouThreshold", "confidenceThreshold"
#: ML programs need iOS 15 / macOS 12; nothing in these networks needs a later target.
DEPLOYMENT = "iOS15"
#: NMS on float32 arrays is valid from specification version 5 (iOS 14); earlier ones want doubles.
NMS_SPEC_VERSION = 5

#: MIL ops these networks are made of that Core ML implements on the CPU, the GPU and the Neural
#: Engine (Apple's coremltools guides and the community's Neural Engine notes; the dispatch itself
#: can only be observed on a device). An op outside the list is reported, not refused: it may make
#: Core ML fall back to the CPU for part of the graph, which is slow but not wrong.
ALL_UNITS_OPS = frozenset({
    "conv", "linear", "matmul", "batch_norm", "add", "sub", "mul", "real_div", "maximum", "minimum",
    "relu", "relu6", "clip", "sigmoid", "softmax", "exp", "sqrt", "tanh", "reduce_mean", "avg_pool",
    "max_pool", "pad", "concat", "reshape", "transpose", "slice_by_index", "squeeze", "expand_dims",
    "upsample_nearest_neighbor", "cast",
})
#: ops that compute nothing on a compute unit: constants, and the classifier's label mapping that
#: the Core ML framework applies to the probabilities.
FRAMEWORK_OPS = frozenset({"const", "classify"})

#: Vision's crop-and-scale options that reproduce Falconet's resize modes (square inputs).
VISION_CROP = {CENTER_CROP: "centerCrop", "stretch": "scaleFill"}

PARITY_NOTE = ("Core ML cannot run on Linux (coremltools' predict raises 'Model prediction is only supported "
               "on macOS'), so the .mlpackage was not compared numerically with the trained model. Its structure "
               "was verified from the saved file (see structural_checks); numeric parity needs a macOS machine.")


def export(model: Any, manifest: Manifest, package_dir: Path, context: Any = None) -> dict[str, Any]:
    """Write ``model.mlpackage``, read it back, and return the entry with its structural checks."""
    try:
        import coremltools as ct
    except ImportError as exc:
        raise ExportError(f"The coreml export needs falconet[coreml] installed ({exc}).",
                          code="ExportToolMissing", status=500) from exc

    precision = getattr(context, "precision", "fp32")
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"Core ML export supports fp32 and fp16, not {precision}.",
                          code="ExportPrecisionUnsupported")
    package_dir = Path(package_dir)
    target = package_dir / PACKAGE
    if target.exists():  # a stray folder the manifest does not know about (the registry moved any known one)
        shutil.rmtree(target)
    try:
        program_ops = _write(ct, model, manifest, precision, target)
        checks = verify_package(target, manifest, program_ops, _model_mean(model))
    except ExportError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; the user needs one clear error
        shutil.rmtree(target, ignore_errors=True)
        raise ExportError(f"Core ML conversion failed: {type(exc).__name__}: {exc}",
                          code="CoreMLConversionFailed") from exc
    files = sorted(p.relative_to(package_dir).as_posix() for p in target.rglob("*") if p.is_file())
    return _entry(manifest, precision, files, checks)


def _write(ct: Any, model: Any, manifest: Manifest, precision: str, target: Path) -> Counter[str]:
    """Convert, describe and save the package; return the op histogram taken right after conversion."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if manifest.task == DETECTION:
            mlmodel, program_ops = _detection_pipeline(ct, model, manifest, precision)
        else:
            mlmodel, program_ops = _classifier(ct, model, manifest, precision)
        _describe(mlmodel, manifest)
        mlmodel.save(str(target))
    return program_ops


def _entry(manifest: Manifest, precision: str, files: list[str], checks: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry: the files, the input an app feeds, and what it must know to use them."""
    size = manifest.input
    return {
        "file": PACKAGE,
        "extra_files": files,  # every regular file inside the package, so the registry hashes each one
        "precision": precision,
        "model_type": checks["model_type"],
        "minimum_deployment_target": "iOS 15 / macOS 12 (ML program)",
        "compute_precision": "float32" if precision == "fp32" else "float16",
        "compute_units": ("CPU and GPU: the Neural Engine computes in float16 only, so Core ML runs a float32 "
                          "program elsewhere" if precision == "fp32" else "CPU, GPU and Neural Engine"),
        "input": {"name": INPUT_NAME, "type": "image", "color": "RGB", "width": size.width, "height": size.height,
                  "shape": [1, 3, size.height, size.width], "layout": "NCHW", "dtype": "image (8-bit RGB pixels)",
                  "range": [0, 255], "scale": 1.0, "bias": [0.0, 0.0, 0.0]},
        "outputs": [o["name"] for o in checks["outputs"]],
        "labels_in": _labels_in(manifest),
        "vision": _vision_usage(manifest),
        **({"detection": _detection_notes(manifest)} if manifest.task == DETECTION else {}),
        "runtime_backend": None,
        "parity_note": PARITY_NOTE,
        "checks": checks,
    }


# ------------------------------------------------------------------ conversion

def _image_input(ct: Any, manifest: Manifest) -> Any:
    """Scale 1, no bias: Vision hands over 0-255 pixels and the network normalises them itself."""
    h, w = manifest.input.height, manifest.input.width
    return ct.ImageType(name=INPUT_NAME, shape=(1, 3, h, w), scale=1.0, bias=[0.0, 0.0, 0.0],
                        color_layout=ct.colorlayout.RGB)


def _convert(ct: Any, traced: Any, manifest: Manifest, precision: str, **options: Any) -> tuple[Any, Counter[str]]:
    mlmodel = ct.convert(traced, inputs=[_image_input(ct, manifest)], convert_to="mlprogram",
                         minimum_deployment_target=getattr(ct.target, DEPLOYMENT),
                         compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                         **options)
    # The converted MIL program is the reference op list; verify_package compares the saved file with it.
    return mlmodel, Counter(op.op_type for op in _mil_ops(mlmodel._mil_program.functions["main"]))


def _mil_ops(block: Any) -> list[Any]:
    """Every operation of a MIL block, nested blocks included."""
    found = []
    for op in block.operations:
        found.append(op)
        for inner in getattr(op, "blocks", []) or []:
            found += _mil_ops(inner)
    return found


def _trace(module: Any, manifest: Manifest) -> Any:
    import torch

    example = torch.rand(1, 3, manifest.input.height, manifest.input.width) * 255
    with torch.no_grad():
        return torch.jit.trace(module.eval(), example, check_trace=False)


def _classifier(ct: Any, model: Any, manifest: Manifest, precision: str) -> tuple[Any, Counter[str]]:
    traced = _trace(model, manifest)
    if manifest.task == MULTICLASS:
        mlmodel, ops = _convert(ct, traced, manifest, precision,
                                classifier_config=ct.ClassifierConfig(list(manifest.labels)))
        # coremltools names the dictionary "classLabel_probs"; the manifest calls it "probabilities"
        spec = mlmodel.get_spec()
        ct.utils.rename_feature(spec, spec.description.predictedProbabilitiesName, "probabilities")
        return ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True), ops
    return _convert(ct, traced, manifest, precision, outputs=[ct.TensorType(name="probabilities")])


def _vision_detector(model: Any) -> Any:
    """One image in, Vision's layout out: scores (N, C) and boxes (N, 4) as centre x, centre y, w, h."""
    import torch

    class VisionDetector(torch.nn.Module):
        def __init__(self, detector: torch.nn.Module) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            boxes, scores = self.detector(x)
            corners = boxes[0]  # x1, y1, x2, y2 normalised; slicing only (no shape arithmetic in the trace)
            centre = (corners[:, 0:2] + corners[:, 2:4]) * 0.5
            size = corners[:, 2:4] - corners[:, 0:2]
            return scores[0], torch.cat([centre, size], dim=1)

    return VisionDetector(model).eval()


def _detection_pipeline(ct: Any, model: Any, manifest: Manifest, precision: str) -> tuple[Any, Counter[str]]:
    detector, ops = _convert(ct, _trace(_vision_detector(model), manifest), manifest, precision,
                             outputs=[ct.TensorType(name=RAW_CONFIDENCE), ct.TensorType(name=RAW_COORDINATES)])
    nms = ct.models.MLModel(_nms_spec(ct, detector.get_spec(), manifest))
    # make_pipeline keeps the ML program's weights (renamed per stage) and returns an .mlpackage model:
    # a pipeline that contains an ML program cannot be written as a single .mlmodel file.
    return ct.utils.make_pipeline(detector, nms), ops


def _nms_spec(ct: Any, detector_spec: Any, manifest: Manifest) -> Any:
    """Core ML's NonMaximumSuppression model: per-class PickTop at the manifest's IoU, thresholds overridable."""
    post = manifest.output.get("postprocess", {})
    spec = ct.proto.Model_pb2.Model()
    spec.specificationVersion = NMS_SPEC_VERSION
    for raw in detector_spec.description.output:
        spec.description.input.add().CopyFrom(raw)
    for name in (IOU_INPUT, CONFIDENCE_INPUT):
        feature = spec.description.input.add()
        feature.name = name
        feature.type.doubleType.SetInParent()
        feature.type.isOptional = True
    for name, width in ((CONFIDENCE, len(manifest.labels)), (COORDINATES, 4)):
        array = spec.description.output.add()
        array.name = name
        array.type.multiArrayType.dataType = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        ranges = array.type.multiArrayType.shapeRange.sizeRanges
        rows, cols = ranges.add(), ranges.add()
        rows.lowerBound, rows.upperBound = 0, int(post.get("max_detections", 100))
        cols.lowerBound = cols.upperBound = width
    nms = spec.nonMaximumSuppression
    nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName = RAW_CONFIDENCE, RAW_COORDINATES
    nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName = CONFIDENCE, COORDINATES
    nms.iouThresholdInputFeatureName, nms.confidenceThresholdInputFeatureName = IOU_INPUT, CONFIDENCE_INPUT
    nms.iouThreshold = float(post.get("nms_iou", 0.45))
    nms.confidenceThreshold = float(post.get("score_threshold", 0.01))
    nms.pickTop.perClass = True
    nms.stringClassLabels.vector.extend(manifest.labels)
    return spec


def _describe(mlmodel: Any, manifest: Manifest) -> None:
    """What Xcode shows, and what an app reads back: labels, task and the preprocessing to set."""
    mlmodel.author = "Falconet"
    mlmodel.short_description = f"{manifest.project or 'Falconet model'}: {manifest.task} ({manifest.backbone})"
    metadata = mlmodel.user_defined_metadata
    metadata["labels"] = json.dumps(list(manifest.labels))
    metadata["falconet.task"] = manifest.task
    metadata["falconet.resize"] = manifest.input.resize
    metadata["falconet.imageCropAndScaleOption"] = VISION_CROP[manifest.input.resize]
    preview = {MULTICLASS: "imageClassifier", DETECTION: "objectDetector"}.get(manifest.task)
    if preview:
        metadata["com.apple.coreml.model.preview.type"] = preview
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB image, {manifest.input.width}x{manifest.input.height}, pixels 0-255 (normalisation is inside the "
        f"model); set VNImageCropAndScaleOption.{VISION_CROP[manifest.input.resize]}")
    if manifest.task == DETECTION:
        mlmodel.input_description[IOU_INPUT] = "(optional) IoU threshold of the per-class NMS"
        mlmodel.input_description[CONFIDENCE_INPUT] = "(optional) lowest confidence kept"
        mlmodel.output_description[CONFIDENCE] = "per-tag confidence of each kept box (N x tags)"
        mlmodel.output_description[COORDINATES] = "kept boxes: centre x, centre y, width, height, normalised (N x 4)"
    else:
        mlmodel.output_description["probabilities"] = (
            "independent sigmoid probability of each tag (order: metadata 'labels')" if manifest.task == MULTILABEL
            else "softmax probability of each tag")


def _model_mean(model: Any) -> list[float] | None:
    mean = getattr(model, "mean", None)
    return [float(v) for v in mean.flatten()] if mean is not None else None


# ------------------------------------------------------------------ structural verification (from disk)

def verify_package(path: Path, manifest: Manifest, program_ops: Counter[str] | dict[str, int],
                   model_mean: list[float] | None = None) -> dict[str, Any]:
    """Read a saved .mlpackage back and check it against the manifest; raise on a broken contract.

    ``program_ops`` is the op histogram taken right after conversion; the saved program must hold
    the same ops. Returns the figures recorded as the export's structural checks.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    problems: list[str] = []
    kind = spec.WhichOneof("Type")
    stages = [m.WhichOneof("Type") for m in spec.pipeline.models] if kind == "pipeline" else []
    want_kind, want_stages = ("pipeline", ["mlProgram", "nonMaximumSuppression"]) if manifest.task == DETECTION \
        else ("mlProgram", [])
    if kind != want_kind or stages != want_stages:
        problems.append(f"model type {kind} {stages} instead of {want_kind} {want_stages}")
    program = spec.pipeline.models[0] if stages[:1] == ["mlProgram"] else spec
    checks: dict[str, Any] = {
        "read_back_from": path.name,
        "model_type": kind,
        "pipeline_stages": stages or None,
        "specification_version": spec.specificationVersion,
        "input": _check_input(spec, manifest, problems),
        "outputs": _check_outputs(spec, manifest, problems),
    }
    labels = _labels_of(spec, program, manifest)
    if labels != list(manifest.labels):
        problems.append(f"labels {labels} differ from the manifest's {list(manifest.labels)}")
    checks["labels"] = labels
    checks["labels_match_manifest"] = labels == list(manifest.labels)
    if program.WhichOneof("Type") == "mlProgram":
        checks["image_scaling"] = _check_image_scaling(program, model_mean, problems)
        checks.update(_check_ops(program, program_ops, problems))
        checks["weight_files"] = _check_weights(program, path, problems)
    if manifest.task == DETECTION and stages == want_stages:
        checks["nms"] = _check_nms(spec.pipeline.models[1], manifest, problems)
    checks["numeric_parity"] = "not measured: Core ML predictions need macOS (they raise on Linux)"
    if problems:
        raise ExportError(f"The saved Core ML package {path} does not match the model package: "
                          + "; ".join(problems) + ".", code="CoreMLStructureMismatch")
    return checks


def _feature(feature: Any) -> dict[str, Any]:
    """A feature description in plain words: name, type and what shapes or sizes it declares."""
    kind = feature.type.WhichOneof("Type")
    out: dict[str, Any] = {"name": feature.name, "type": kind, "optional": bool(feature.type.isOptional)}
    if kind == "imageType":
        image = feature.type.imageType
        out.update(width=image.width, height=image.height,
                   color_space=feature.type.imageType.ColorSpace.Name(image.colorSpace))
    elif kind == "multiArrayType":
        array = feature.type.multiArrayType
        out["dtype"] = array.ArrayDataType.Name(array.dataType)
        if array.WhichOneof("ShapeFlexibility") == "shapeRange":
            out["shape_range"] = [[r.lowerBound, r.upperBound] for r in array.shapeRange.sizeRanges]
        else:
            out["shape"] = list(array.shape)
    elif kind == "dictionaryType":
        out["key_type"] = feature.type.dictionaryType.WhichOneof("KeyType")
    return out


def _check_input(spec: Any, manifest: Manifest, problems: list[str]) -> list[dict[str, Any]]:
    inputs = [_feature(f) for f in spec.description.input]
    image = inputs[0] if inputs else {}
    want = {"name": INPUT_NAME, "type": "imageType", "optional": False, "width": manifest.input.width,
            "height": manifest.input.height, "color_space": "RGB"}
    if image != want:
        problems.append(f"input {image} instead of {want}")
    extra = [(f["name"], f["type"], f["optional"]) for f in inputs[1:]]
    want_extra = [(IOU_INPUT, "doubleType", True), (CONFIDENCE_INPUT, "doubleType", True)] \
        if manifest.task == DETECTION else []
    if extra != want_extra:
        problems.append(f"extra inputs {extra} instead of {want_extra}")
    return inputs


def _check_outputs(spec: Any, manifest: Manifest, problems: list[str]) -> list[dict[str, Any]]:
    outputs = [_feature(f) for f in spec.description.output]
    got = [(o["name"], o["type"]) for o in outputs]
    n = len(manifest.labels)
    if manifest.task == MULTICLASS:
        want = [("classLabel", "stringType"), ("probabilities", "dictionaryType")]
        described = (spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName)
        if described != ("classLabel", "probabilities"):
            problems.append("the classifier does not name classLabel / probabilities as its predicted features")
    elif manifest.task == MULTILABEL:
        want = [("probabilities", "multiArrayType")]
        if outputs and outputs[0].get("shape") not in ([1, n], []):
            problems.append(f"probabilities shape {outputs[0].get('shape')} instead of [1, {n}]")
    else:
        want = [(CONFIDENCE, "multiArrayType"), (COORDINATES, "multiArrayType")]
        limit = int(manifest.output.get("postprocess", {}).get("max_detections", 100))
        for o, width in zip(outputs, (n, 4)):
            if o.get("dtype") != "FLOAT32" or o.get("shape_range") != [[0, limit], [width, width]]:
                problems.append(f"{o['name']} is {o} instead of FLOAT32 with rows 0-{limit} and {width} columns")
    if got != want:
        problems.append(f"outputs {got} instead of {want}")
    return outputs


def _labels_of(spec: Any, program: Any, manifest: Manifest) -> list[str]:
    """Where an app finds the labels: the classify op, the NMS stage, or the metadata (multilabel)."""
    if manifest.task == DETECTION:
        nms = spec.pipeline.models[-1] if spec.WhichOneof("Type") == "pipeline" else None
        return list(nms.nonMaximumSuppression.stringClassLabels.vector) if nms is not None else []
    if manifest.task == MULTICLASS:
        return _classify_labels(program)
    try:
        return list(json.loads(spec.description.metadata.userDefined["labels"]))
    except (KeyError, ValueError):
        return []


def _program_ops(program: Any) -> list[Any]:
    function = program.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def _classify_labels(program: Any) -> list[str]:
    for op in _program_ops(program):
        if op.type == "classify":
            classes = op.inputs["classes"].arguments[0]
            value = classes.value if classes.HasField("value") else _const_value(program, classes.name)
            return [v.immediateValue.tensor.strings.values[0] for v in value.immediateValue.list.values]
    return []


def _const_value(program: Any, name: str) -> Any:
    for op in _program_ops(program):
        if op.type == "const" and op.outputs[0].name == name:
            return op.attributes["val"]
    raise KeyError(name)


def _floats(program: Any, argument: Any) -> list[float] | None:
    """A small constant operand's values (None for weights kept in the blob file)."""
    try:
        value = argument.value if argument.HasField("value") else _const_value(program, argument.name)
    except KeyError:
        return None
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    if kind == "floats":
        return [float(v) for v in tensor.floats.values]
    if kind == "bytes":  # fp16 constants are stored as raw half floats
        import numpy as np

        return [float(v) for v in np.frombuffer(tensor.bytes.values, dtype=np.float16)]
    return None


def _check_image_scaling(program: Any, model_mean: list[float] | None, problems: list[str]) -> dict[str, Any]:
    """The image must reach the network's own mean subtraction unscaled (Core ML's scale 1, bias 0).

    With another scale or bias, the converter puts a mul/add between the image and the network;
    here the first op that is not a dtype cast must be the trained model's ``x - mean``.
    """
    ops = _program_ops(program)
    current, path = INPUT_NAME, []
    while True:
        users = [op for op in ops if any(a.name == current for arg in op.inputs.values() for a in arg.arguments)]
        if len(users) != 1 or users[0].type != "cast":
            break
        path.append("cast")
        current = users[0].outputs[0].name
    first = users[0] if len(users) == 1 else None
    mean = None
    if first is not None and first.type == "sub" and first.inputs["x"].arguments[0].name == current:
        mean = _floats(program, first.inputs["y"].arguments[0])
    ok = mean is not None and (model_mean is None or _close(mean, model_mean))
    if not ok:
        problems.append(f"the image input feeds {[u.type for u in users]} instead of the model's own mean subtraction "
                        "(an extra scale or bias?)")
    return {"casts_before_network": len(path),
            "first_op": first.type if first is not None else None, "subtracts_mean": mean,
            "model_mean": model_mean, "pixels_reach_network_unscaled": ok}


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-2 * max(1.0, abs(y)) for x, y in zip(a, b))


def _check_ops(program: Any, program_ops: Counter[str] | dict[str, int], problems: list[str]) -> dict[str, Any]:
    # Constants are left out of the comparison: serialisation inlines small ones into their users.
    saved = Counter(op.type for op in _program_ops(program) if op.type != "const")
    converted = Counter(program_ops)
    computing = Counter({k: v for k, v in converted.items() if k != "const"})
    if saved != computing:
        problems.append(f"the saved program's ops {dict(saved)} differ from the converted program's {dict(computing)}")
    outside = sorted(set(converted) - ALL_UNITS_OPS - FRAMEWORK_OPS)
    return {
        "op_histogram": dict(sorted(converted.items(), key=lambda kv: (-kv[1], kv[0]))),
        "saved_ops_match_converted": saved == computing,
        "ops_outside_all_compute_units": outside,
        "ops_supported_on_all_compute_units": not outside,
        "opset": program.mlProgram.functions["main"].opset,
    }


def _blob_files(message: Any) -> set[tuple[str, int]]:
    """Every (file name, offset) of a weight kept outside the program proto."""
    found: set[tuple[str, int]] = set()
    if message.DESCRIPTOR.name == "Value" and message.WhichOneof("value") == "blobFileValue":
        return {(message.blobFileValue.fileName, int(message.blobFileValue.offset))}
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            items = list(value.values()) if field.message_type.GetOptions().map_entry else list(value)
        else:
            items = [value]
        for item in items:
            if hasattr(item, "ListFields"):
                found |= _blob_files(item)
    return found


def _check_weights(program: Any, path: Path, problems: list[str]) -> dict[str, Any]:
    """Every weight the program points to must lie inside a file of the package."""
    data = path / "Data" / "com.apple.CoreML"
    blobs = _blob_files(program.mlProgram)
    files: dict[str, int] = {}
    for name, offset in sorted(blobs):
        file = data / name.replace("@model_path/", "", 1)
        if not file.is_file() or offset >= file.stat().st_size:
            problems.append(f"weight {name} at offset {offset} is not in the package")
            continue
        files[file.relative_to(path).as_posix()] = file.stat().st_size
    return {"files": files, "tensors": len(blobs)}


def _check_nms(stage: Any, manifest: Manifest, problems: list[str]) -> dict[str, Any]:
    nms = stage.nonMaximumSuppression
    post = manifest.output.get("postprocess", {})
    found = {
        "specification_version": stage.specificationVersion,
        "iou_threshold": nms.iouThreshold,
        "confidence_threshold": nms.confidenceThreshold,
        "per_class": nms.pickTop.perClass,
        "labels": list(nms.stringClassLabels.vector),
        "inputs": [nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName,
                   nms.iouThresholdInputFeatureName, nms.confidenceThresholdInputFeatureName],
        "outputs": [nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName],
        "input_dtypes": sorted({_feature(f).get("dtype") for f in stage.description.input
                                if f.type.WhichOneof("Type") == "multiArrayType"}),
    }
    want = {"iou_threshold": float(post.get("nms_iou", 0.45)),
            "confidence_threshold": float(post.get("score_threshold", 0.01)),
            "per_class": True, "labels": list(manifest.labels),
            "inputs": [RAW_CONFIDENCE, RAW_COORDINATES, IOU_INPUT, CONFIDENCE_INPUT],
            "outputs": [CONFIDENCE, COORDINATES], "input_dtypes": ["FLOAT32"]}
    for key, value in want.items():
        if found[key] != value:
            problems.append(f"NMS {key} is {found[key]} instead of {value}")
    if stage.specificationVersion < NMS_SPEC_VERSION:
        problems.append("the NMS stage's specification version is too old for float32 arrays")
    return found


# ------------------------------------------------------------------ what the app developer reads

def _labels_in(manifest: Manifest) -> str:
    if manifest.task == MULTICLASS:
        return "the classifier's class labels (classLabel and the probabilities dictionary)"
    if manifest.task == MULTILABEL:
        return ("the model metadata (user-defined key 'labels', a JSON list in output order): Core ML classifiers "
                "assume one label per image, so the sigmoid probabilities are a plain multi-array")
    return "the NMS stage's class labels (VNRecognizedObjectObservation.labels)"


def _vision_usage(manifest: Manifest) -> dict[str, Any]:
    option = VISION_CROP[manifest.input.resize]
    square = manifest.input.width == manifest.input.height
    return {
        "imageCropAndScaleOption": option,
        "reproduces_falconet_resize": manifest.input.resize == "stretch" or square,
        "note": (f"Set VNCoreMLRequest.imageCropAndScaleOption = .{option}: it reproduces Falconet's "
                 f"'{manifest.input.resize}' resize, which the metrics were measured with. Pass the image "
                 "orientation (EXIF) to VNImageRequestHandler. Vision's own resampling may differ from Falconet's "
                 "antialiased bilinear by a few pixel values."),
        "observations": {MULTICLASS: "VNClassificationObservation", MULTILABEL: "VNCoreMLFeatureValueObservation",
                         DETECTION: "VNRecognizedObjectObservation"}[manifest.task],
    }


def _detection_notes(manifest: Manifest) -> dict[str, Any]:
    post = manifest.output.get("postprocess", {})
    return {
        "nms": "Core ML NonMaximumSuppression, per class (PickTop.perClass)",
        "iou_threshold": float(post.get("nms_iou", 0.45)),
        "confidence_threshold": float(post.get("score_threshold", 0.01)),
        "max_detections": int(post.get("max_detections", 100)),
        "optional_inputs": [IOU_INPUT, CONFIDENCE_INPUT],
        "coordinates": "normalised centre x, centre y, width, height with the origin at the top left; Vision's "
                       "boundingBox has its origin at the bottom left",
        "differences_from_falconet_runtime": (
            "Core ML gives each candidate box one tag (its highest score) before per-class NMS, whereas Falconet's "
            "runtime considers every (box, tag) pair. Tag scores are independent probabilities, so their sum can "
            "exceed 1, while Vision reads the sum as the confidence that any object is present: use the labels' "
            "own confidences."),
    }
