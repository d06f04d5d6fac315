"""ONNX Runtime on the CPU (the default backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falconet.core.manifest import Manifest
from falconet.runtime.backends import default_threads, export_file


class OnnxRuntimeBackend:
    """Runs model.onnx, model-fp16.onnx or model-int8.onnx: the file decides the precision."""

    layout = "NCHW"

    def __init__(self, package_dir: Path, manifest: Manifest, *, export_name: str = "onnx",
                 export_entry: dict[str, Any] | None = None, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path, _ = export_file(package_dir, manifest, export_name, export_entry)
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
