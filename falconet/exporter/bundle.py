"""A zip an app developer can use without Falconet: model file(s), labels, manifest and a README.

The README states the exact input contract of the bundled file (layout, value range, crop) and
the post-processing, with minimal usage code for Python, Android (Kotlin) and iOS (Swift), so
that the app reproduces the preprocessing the parity figures were measured with.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, LABELS, MANIFEST, MULTILABEL, Manifest, load_manifest, verify_files
from falconet.core.preprocess import describe


def write_bundle(package_dir: Path, formats: list[str], out: Path) -> Path:
    """Zip the named exports of a package (already exported and verified) into ``out``."""
    package_dir = Path(package_dir)
    manifest = load_manifest(package_dir)
    missing = [f for f in formats if f not in manifest.exports]
    if missing:
        raise ExportError(f"{package_dir} has no {', '.join(missing)} export to bundle; export it first.",
                          code="ExportNotFound", status=404)
    files: list[str] = []
    for name in formats:
        entry = manifest.exports[name]
        files += [f for f in [entry["file"], *entry.get("extra_files", [])] if f not in files]
    verify_files(package_dir, manifest, [f for f in files if (package_dir / f).is_file()])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                path = package_dir / file
                for member in sorted(path.rglob("*")) if path.is_dir() else [path]:
                    if member.is_file():
                        archive.write(member, member.relative_to(package_dir).as_posix())
            archive.write(package_dir / MANIFEST, MANIFEST)
            archive.writestr(LABELS, "".join(f"{label}\n" for label in manifest.labels))
            archive.writestr("README.md", bundle_readme(manifest, formats))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def bundle_readme(manifest: Manifest, formats: list[str]) -> str:
    task = manifest.task
    lines = [f"# {manifest.project or 'Falconet model'}: {task}", "",
             f"Domain `{manifest.domain}` ({manifest.backbone}), {len(manifest.labels)} tags: "
             + ", ".join(f"`{t}`" for t in manifest.labels) + " (labels.txt, one per line, in output order).", ""]
    metrics = manifest.metrics
    if metrics:
        figures = {k: metrics[k] for k in ("accuracy", "precision", "recall", "map", "map50", "map50_95") if k in metrics}
        lines += ["Measured on images the model did not train on: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if isinstance(v, (int, float))) + ".", ""]
    for name in formats:
        lines += _format_section(manifest, name, manifest.exports[name])
    lines += ["## Output", "", _output_text(manifest), "",
              "## Usage", "", "The snippets are written for this model's contract; the Python ones are run by "
              "Falconet's tests, the Kotlin and Swift ones were not compiled on the build machine.", ""]
    families = {_family(n) for n in formats}
    lines += _python_usage(manifest, formats)
    if families & {"tflite", "onnx"}:
        lines += _kotlin_usage(manifest, "tflite" if "tflite" in families else "onnx")
    if families & {"coreml", "tflite"}:
        lines += _swift_usage(manifest, "coreml" if "coreml" in families else "tflite")
    return "\n".join(lines) + "\n"


def _family(name: str) -> str:
    return name.split("-")[0]


def _format_section(manifest: Manifest, name: str, entry: dict[str, Any]) -> list[str]:
    contract = manifest.input.with_layout(entry.get("input", {}).get("layout", "NCHW"))
    io = entry.get("input", {})
    lines = [f"## {name}: `{entry['file']}`", "",
             f"- Input `{io.get('name', 'image')}`, shape {io.get('shape', '?')}, {io.get('dtype', 'float32')}.",
             f"- Preprocessing: {describe(contract)}"]
    quant = entry.get("quantization") or entry.get("input_quantization")
    if quant:
        lines.append(f"- Quantization: `{json.dumps(quant)}` (real = scale * (q - zero_point)).")
    parity = entry.get("parity", {})
    if parity.get("measured"):
        shown = {k: v for k, v in parity.items() if k in (
            "images", "top1_agreement", "max_abs_diff", "match_rate", "raw_max_score_diff", "metric", "reference_metric",
            "metric_value", "metric_drop")}
        lines.append(f"- Parity with the trained model, measured in {parity.get('runtime')}: `{json.dumps(shown)}`.")
    elif parity:
        lines.append(f"- Parity NOT measured: {parity.get('reason')}")
    return lines + [""]


def _output_text(manifest: Manifest) -> str:
    if manifest.task == DETECTION:
        post = manifest.output.get("postprocess", {})
        return ("`boxes` (1, N, 4): normalised x1, y1, x2, y2 of the whole image; `scores` (1, N, tags): the "
                f"probability of each tag for each box. Keep scores >= your threshold, then class-aware NMS at IoU "
                f"{post.get('nms_iou', 0.45)} and at most {post.get('max_detections', 100)} boxes"
                + (f"; then box voting: move each kept box to the mean of the same-tag candidates overlapping it by "
                   f"IoU >= {post['box_vote_iou']}, weighted by score ** {post.get('box_vote_power', 4)} (the figures "
                   "were measured with it; plain NMS places boxes a little less precisely)"
                   if post.get("box_vote_iou") is not None else "")
                + ". (Core ML's pipeline does plain NMS itself, without box voting.)")
    kind = "independent sigmoid probabilities" if manifest.task == MULTILABEL else "softmax probabilities (sum 1)"
    return f"`probabilities` (1, tags): {kind}, in labels.txt order."


def _python_usage(manifest: Manifest, formats: list[str]) -> list[str]:
    name = next((f for f in formats if _family(f) != "coreml"), None)
    if name is None:
        return []
    entry = manifest.exports[name]
    c = manifest.input
    crop = ("side = min(img.size); left, top = (img.width - side) // 2, (img.height - side) // 2\n"
            "img = img.crop((left, top, left + side, top + side))\n") if c.resize == "center-crop" else ""
    layout = entry.get("input", {}).get("layout", "NCHW")
    to_layout = "x = x.transpose(2, 0, 1)[None]" if layout == "NCHW" else "x = x[None]"
    run = {
        "onnx": f'import onnxruntime as ort\nsession = ort.InferenceSession("{entry["file"]}")\n'
                'outputs = session.run(None, {session.get_inputs()[0].name: x})',
        "tflite": f'from ai_edge_litert.interpreter import Interpreter\ninterpreter = Interpreter("{entry["file"]}")\n'
                  'interpreter.allocate_tensors()\ninp = interpreter.get_input_details()[0]\n'
                  'if inp["dtype"] != np.float32:  # int8 file: quantize with the input scale / zero point\n'
                  '    scale, zero = inp["quantization"]\n    x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])\n'
                  'interpreter.set_tensor(inp["index"], x)\ninterpreter.invoke()\n'
                  'outputs = []\nfor out in interpreter.get_output_details():  # dequantize int8 outputs\n'
                  '    y = interpreter.get_tensor(out["index"]).astype(np.float32)\n'
                  '    scale, zero = out["quantization"]\n    outputs.append((y - zero) * scale if scale else y)',
        "openvino": f'import openvino as ov\nmodel = ov.Core().compile_model("{entry["file"]}", "CPU", '
                    f'{{"INFERENCE_PRECISION_HINT": "{entry.get("inference_precision", "f32")}"}})\n'
                    'outputs = list(model(x).values())',
    }[_family(name)]
    return ["### Python", "", "With Falconet's runtime (`pip install falconet`), from the unzipped folder:", "",
            "```python", "import falconet", f'predictor = falconet.load(".", backend="{name}")',
            'for p in predictor.predict("photo.jpg"):', "    print(p.tag_name, p.probability, p.bounding_box)", "```", "",
            "Without it:", "", "```python", "import numpy as np", "from PIL import Image, ImageOps", "",
            'img = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")',
            crop + f"img = img.resize(({c.width}, {c.height}), Image.Resampling.BILINEAR)",
            "x = np.asarray(img, dtype=np.float32)  # HWC, 0-255; normalisation is inside the model",
            to_layout, run, "```", ""]


def _kotlin_usage(manifest: Manifest, family: str) -> list[str]:
    c = manifest.input
    crop = "centre-crop the largest square, then " if c.resize == "center-crop" else ""
    if family == "tflite":
        body = [
            "// build.gradle: implementation(\"com.google.ai.edge.litert:litert:<version>\")",
            "val interpreter = Interpreter(loadModelFile(context, \"model.tflite\"))",
            f"// {crop}scale the Bitmap to {c.width}x{c.height} (bilinear: Bitmap.createScaledBitmap(src, {c.width}, {c.height}, true))",
            f"val input = ByteBuffer.allocateDirect(4 * {c.width} * {c.height} * 3).order(ByteOrder.nativeOrder())",
            "val pixels = IntArray(width * height); bitmap.getPixels(pixels, 0, width, 0, 0, width, height)",
            "for (p in pixels) {  // NHWC, RGB, float 0-255 (an int8 file: quantize with the input scale / zero point)",
            "    input.putFloat(((p shr 16) and 0xFF).toFloat()); input.putFloat(((p shr 8) and 0xFF).toFloat()); input.putFloat((p and 0xFF).toFloat())",
            "}",
            f"val probabilities = Array(1) {{ FloatArray({len(manifest.labels)}) }}",
            "interpreter.run(input, probabilities)  // detection: runForMultipleInputsOutputs with boxes and scores",
        ]
    else:
        body = [
            "// build.gradle: implementation(\"com.microsoft.onnxruntime:onnxruntime-android:<version>\")",
            "val env = OrtEnvironment.getEnvironment()",
            "val session = env.createSession(modelBytes)",
            f"// {crop}scale the Bitmap to {c.width}x{c.height}; fill a FloatBuffer in NCHW order (all R, then G, then B), values 0-255",
            f"val tensor = OnnxTensor.createTensor(env, buffer, longArrayOf(1, 3, {c.height}, {c.width}))",
            "val outputs = session.run(mapOf(session.inputNames.first() to tensor))",
        ]
    return ["### Android (Kotlin)", "", "```kotlin", *body, "```", ""]


def _swift_usage(manifest: Manifest, family: str) -> list[str]:
    if family == "coreml":
        option = ".centerCrop" if manifest.input.resize == "center-crop" else ".scaleFill"
        result = ("VNRecognizedObjectObservation" if manifest.task == DETECTION else
                  "VNClassificationObservation" if manifest.task != MULTILABEL else "VNCoreMLFeatureValueObservation")
        body = ["import Vision", "let model = try VNCoreMLModel(for: MLModel(contentsOf: compiledURL))",
                "let request = VNCoreMLRequest(model: model) { request, _ in",
                f"    let results = request.results as? [{result}]", "}",
                f"request.imageCropAndScaleOption = {option}  // reproduces Falconet's preprocessing",
                "try VNImageRequestHandler(cgImage: image, orientation: orientation).perform([request])"]
    else:
        body = ["import TensorFlowLite", "let interpreter = try Interpreter(modelPath: path)",
                "try interpreter.allocateTensors()",
                f"// RGB bytes of the {manifest.input.width}x{manifest.input.height} image as Float32 0-255, NHWC",
                "try interpreter.copy(inputData, toInputAt: 0)", "try interpreter.invoke()",
                "let output = try interpreter.output(at: 0)"]
    return ["### iOS (Swift)", "", "```swift", *body, "```", ""]
