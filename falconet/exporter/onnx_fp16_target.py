"""ONNX fp16: half-size weights and fp16 compute, float32 input and output kept.

Made from the fp32 ONNX graph with the float16 converter that onnxruntime ships
(``onnxruntime.transformers.float16``), so no extra dependency is needed. The input and output
stay float32 (``keep_io_types``), so the same Predictor and the same preprocessing feed this
file as every other one.

What stays float32 inside: the last weighted layers and what follows them (a classifier's Gemm
and softmax/sigmoid, the detector's output convolutions and box decoding). They cost next to
nothing, and in fp16 the detector's ``exp(d) * stride`` overflows (exp(8) * 32 > 65504) and
pixel coordinates lose precision.

onnxruntime's CPU provider has fp16 kernels for few ops on x86: for the others it inserts casts
and computes in float32, so on a PC this file is half the size but slower than fp32 (measured
1.2-1.5x the fp32 latency at one thread on an AVX2 EPYC); fp16 pays on GPUs and on ARM CPUs
with fp16 arithmetic.
"""
from __future__ import annotations

import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any


from falconet.core.errors import ExportError
from falconet.core.manifest import DETECTION, Manifest

FILE = "model-fp16.onnx"
#: the operators that carry a network's weights and almost all of its arithmetic
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def output_layers(graph: Any) -> list[str]:
    """Names of the last weighted layers (a classifier's Gemm, a detector's output convolutions)
    and of every node after them (softmax/sigmoid, box decoding).

    These are the nodes kept in float32 when the rest goes to fp16 or int8: they are cheap, they
    shape what a user reads (probabilities, box corners), and a linear head fitted on few images
    can carry large weights (|w| ~ 2000 in the quick-mode fixtures) whose logits do not survive
    8-bit inputs: quantizing that one Gemm flipped 1 of 8 held-out answers on its own.
    """
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    feeds_heavy: dict[int, bool] = {}
    for node in reversed(list(graph.node)):  # ONNX graphs are topologically sorted
        feeds_heavy[id(node)] = any(c.op_type in HEAVY_OPS or feeds_heavy.get(id(c), False)
                                    for out in node.output for c in consumers[out])
    return [n.name for n in graph.node if not feeds_heavy[id(n)] and n.op_type != "Constant"]


def convert_to_fp16(fp32_path: Path, out_path: Path) -> dict[str, Any]:
    """Write the fp16 graph of ``fp32_path`` to ``out_path``; return what was kept in float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    unnamed = [n for n in model.graph.node if not n.name]
    for i, node in enumerate(unnamed):  # the block list works by node name
        node.name = f"fp16_unnamed_{i}"
    keep = output_layers(model.graph)
    kept_ops = sorted({n.op_type for n in model.graph.node if n.name in set(keep)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _sort_topologically(half.graph)
    onnx.checker.check_model(half)
    onnx.save(half, str(out_path))
    return {"nodes_kept_float32": len(keep), "ops_kept_float32": kept_ops}


def _sort_topologically(graph: Any) -> None:
    """The converter appends the input casts at the end of the node list; onnxruntime does not
    mind, but the ONNX checker and other tools want producers before consumers."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ExportError("The fp16 ONNX graph has a cycle or a dangling input.", code="ExportOnnxFp16Invalid")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


def _check_runs(path: Path, manifest: Manifest) -> None:
    """The file must run in onnxruntime with a float32 batch and give float32 outputs."""
    from falconet.exporter.onnx_target import smoke_run

    session, _ = smoke_run(path, manifest, "fp16 ONNX", "ExportOnnxFp16Unrunnable")
    bad = [o.name for o in session.get_outputs() if o.type != "tensor(float)"]
    if bad:
        raise ExportError(f"The fp16 ONNX file gives non-float32 outputs ({bad}).", code="ExportOnnxFp16Unrunnable")


def export(model: Any, manifest: Manifest, package_dir: Path, context: Any) -> dict[str, Any]:
    """model-fp16.onnx from a freshly written fp32 ONNX graph of ``model``."""
    import onnxruntime as ort

    from falconet.exporter.onnx_target import INPUT_NAME, OPSET

    path = Path(package_dir) / FILE
    with tempfile.TemporaryDirectory(prefix="falconet-fp16-") as tmp:
        fp32 = context.write_fp32_onnx(Path(tmp) / "model-fp32.onnx")
        kept = convert_to_fp16(fp32, path)
    _check_runs(path, manifest)
    size = manifest.input
    return {
        "file": FILE,
        "precision": "fp16",
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size.height, size.width], "layout": "NCHW",
                  "dtype": "float32", "range": [0, 255]},
        "outputs": list(manifest.output["names"]),
        "weights": "float16",
        "compute": "float16, except the last weighted layers and the nodes after them (kept float32)",
        **kept,
        "io_dtype": "float32 (cast to/from float16 inside the graph)",
        "converter": f"onnxruntime {ort.__version__} transformers.float16.convert_float_to_float16",
        "note": "onnxruntime's x86 CPU provider computes most fp16 ops in float32 through inserted casts: "
                "the file is half the size but not faster there; fp16 arithmetic pays on GPUs and ARM.",
        "nms_in_graph": False if manifest.task == DETECTION else None,
        "runtime_backend": "onnx-fp16",
    }
