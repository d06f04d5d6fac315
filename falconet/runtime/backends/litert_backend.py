"""LiteRT (TFLite) on the CPU with XNNPACK: model.tflite, model-fp16.tflite, model-int8.tflite.

The files take an NHWC image, so the Predictor preprocesses to NHWC. An int8 file takes int8
pixels (what mobile accelerators want) and may give int8 outputs: this backend quantizes the float
pixels and dequantizes any integer output with the scale / zero point stored in the file, so the
Predictor sees float probabilities, boxes and scores whatever the precision. Outputs are matched
to the manifest by their signature names, not by TFLite's tensor order.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from falconet.core.errors import BackendUnavailableError, FalconetError
from falconet.core.manifest import Manifest
from falconet.runtime.backends import default_threads, export_file

SIGNATURE = "serving_default"


class LiteRTBackend:
    """One interpreter per backend; calls are serialised because a TFLite interpreter holds its
    input and output buffers (a server wanting parallel requests opens one backend per worker)."""

    layout = "NHWC"

    def __init__(self, package_dir: Path, manifest: Manifest, *, export_name: str = "tflite",
                 export_entry: dict[str, Any] | None = None, threads: int | None = None) -> None:
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        path, entry = export_file(package_dir, manifest, export_name, export_entry)
        self.name = export_name
        self.threads = threads or default_threads()
        self.interpreter = Interpreter(model_path=str(path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        names = list(manifest.output["names"])
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE in signatures:
            runner = self.interpreter.get_signature_runner(SIGNATURE)
            inputs = list(runner.get_input_details().values())
            outputs = _by_name(runner.get_output_details(), names, path)
        else:  # a file written by another tool: single input, outputs in the manifest order
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != len(names):
            raise BackendUnavailableError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                                          f"expected 1 and {len(names)} ({', '.join(names)}).", code="ExportMismatch")
        self.input = inputs[0]
        self.outputs = outputs
        self.batch_size = int(self.input["shape"][0])
        self._lock = threading.Lock()
        precision = entry.get("precision") or ("int8" if np.dtype(self.input["dtype"]).kind == "i" else "fp32")
        self.description = (f"ai-edge-litert {version('ai-edge-litert')} XNNPACK CPU, {self.threads} threads "
                            f"({path.name}, {precision}, {np.dtype(self.input['dtype']).name} input)")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Float NHWC batch (any size) -> float outputs in the manifest order."""
        batch = np.asarray(batch, dtype=np.float32)
        image_shape = tuple(int(v) for v in self.input["shape"][1:])
        if batch.ndim != 4 or batch.shape[1:] != image_shape:
            raise FalconetError(f"{self.name} takes NHWC batches of shape (N, {', '.join(map(str, image_shape))}), "
                                f"got {batch.shape}.", code="BadRequestInputShape", status=400)
        if not len(batch):
            return [np.zeros((0, *(int(v) for v in o["shape"][1:])), np.float32) for o in self.outputs]
        step = self.batch_size  # 1 for Falconet's files; a fixed larger batch is padded at the end
        parts: list[list[np.ndarray]] = []
        with self._lock:
            for start in range(0, len(batch), step):
                chunk = batch[start:start + step]
                if len(chunk) < step:
                    chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)])
                self.interpreter.set_tensor(self.input["index"], _quantize(chunk, self.input))
                self.interpreter.invoke()
                parts.append([_dequantize(self.interpreter.get_tensor(o["index"]), o)[:len(batch) - start]
                              for o in self.outputs])
        return [np.concatenate(group) for group in zip(*parts)]


def _by_name(details: dict[str, dict[str, Any]], names: list[str], path: Path) -> list[dict[str, Any]]:
    """Outputs in the manifest order: by signature name, which TFLite's own tensor order need not follow."""
    if set(names) <= set(details):
        return [details[n] for n in names]
    numbered = {k: int(k.rsplit("_", 1)[1]) for k in details if k.rsplit("_", 1)[-1].isdigit()}
    if len(numbered) == len(details) == len(names):  # unnamed output_0, output_1...: the model's own order
        return [details[k] for k in sorted(numbered, key=numbered.__getitem__)]
    raise BackendUnavailableError(f"{path.name} outputs {sorted(details)} do not match the manifest's {names}.",
                                  code="ExportMismatch")


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float pixels -> the input tensor's type (int8: q = round(x / scale) + zero_point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return np.array(q, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
