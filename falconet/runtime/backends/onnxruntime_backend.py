"""ONNX Runtime: on the CPU (the default backend), and on a GPU (``onnx-gpu``, the Jetson image)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Union

import numpy as np

from falconet.core.manifest import Manifest
from falconet.runtime.backends import default_threads, export_file

log = logging.getLogger("falconet.runtime")

#: Backends that run another backend's exported file: onnx-gpu runs the plain fp32 ``model.onnx``
#: (TensorRT builds its own reduced-precision engine from it; fp16/int8 ONNX files would not help).
FILE_OF = {"onnx-gpu": "onnx"}

#: The GPU preference order: TensorRT (fastest, builds an engine on first use), CUDA, then the CPU.
GPU_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

Provider = Union[str, tuple[str, dict[str, Any]]]


def gpu_providers(available: list[str], trt_cache: str | None = None) -> list[Provider]:
    """The providers onnx-gpu asks for, in GPU_ORDER, limited to those this onnxruntime reports.

    TensorRT gets an fp16 engine (the Jetson profile's precision) and, with ``trt_cache``
    (FALCONET_TRT_CACHE), an engine cache there: building the engine takes minutes on a Jetson and
    must not happen on every start.
    """
    chosen: list[Provider] = []
    for name in GPU_ORDER:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            options: dict[str, Any] = {"trt_fp16_enable": True}
            if trt_cache:
                options.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt_cache,
                               trt_timing_cache_enable=True, trt_timing_cache_path=trt_cache)
            chosen.append((name, options))
        else:
            chosen.append(name)
    return chosen or ["CPUExecutionProvider"]


def _provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


class OnnxRuntimeBackend:
    """Runs model.onnx, model-fp16.onnx or model-int8.onnx: the file decides the precision."""

    layout = "NCHW"

    def __init__(self, package_dir: Path, manifest: Manifest, *, export_name: str = "onnx",
                 export_entry: dict[str, Any] | None = None, threads: int | None = None,
                 providers: list[Provider] | None = None) -> None:
        import onnxruntime as ort

        path, _ = export_file(package_dir, manifest, FILE_OF.get(export_name, export_name), export_entry)
        self.name = export_name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.description = f"onnxruntime {ort.__version__} {self.session.get_providers()[0]} ({path.name})"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.asarray(o, dtype=np.float32) for o in outputs]


class OnnxGpuBackend(OnnxRuntimeBackend):
    """``onnx-gpu``: model.onnx on TensorRT, else CUDA, else the CPU, whichever really starts.

    A provider onnxruntime lists can still fail to start (no libnvinfer, no CUDA device): the
    session is then opened again without it, so a Jetson with a broken TensorRT still serves on
    CUDA. The provider that was used is in ``description`` (and so in ``falconet serve``'s /models,
    ``falconet predict``'s header and bench rows).
    """

    def __init__(self, package_dir: Path, manifest: Manifest, *, export_name: str = "onnx-gpu",
                 export_entry: dict[str, Any] | None = None, threads: int | None = None,
                 providers: list[Provider] | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        chain = providers or gpu_providers(available, os.environ.get("FALCONET_TRT_CACHE") or None)
        failures: list[str] = []
        while True:
            try:
                # onnxruntime prints its own fallback notes to stdout, which is `predict --json`'s output.
                with contextlib.redirect_stdout(sys.stderr):
                    super().__init__(package_dir, manifest, export_name=export_name, export_entry=export_entry,
                                     threads=threads, providers=chain)
                break
            except (RuntimeError, ValueError) as exc:
                if len(chain) <= 1:
                    raise
                failures.append(f"{_provider_name(chain[0])} failed: {str(exc).splitlines()[0][:200]}")
                chain = chain[1:]
        used = self.session.get_providers()[0]
        self.providers_available = available
        self.provider = used
        if used == "CPUExecutionProvider":
            log.warning("onnx-gpu runs on the CPU: onnxruntime %s offers %s", ort.__version__, ", ".join(available))
        # onnxruntime also falls back by itself (TensorRT without libnvinfer -> CUDA): say so.
        names = [_provider_name(p) for p in chain]
        failures += [f"{name} did not start" for name in (names[:names.index(used)] if used in names else [])]
        notes = "; ".join(failures) or f"available: {', '.join(p for p in available if p in GPU_ORDER)}"
        self.description = f"{self.description[:-1]}; {notes})"
