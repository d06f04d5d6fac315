"""ONNX Runtime on the CPU (the default backend)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from falconet.core.errors import BackendUnavailableError
from falconet.core.manifest import Manifest, verify_files


class OnnxRuntimeBackend:
    name = "onnx"
    layout = "NCHW"

    def __init__(self, package_dir: Path, manifest: Manifest, *, file: str | None = None, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        entry = manifest.exports.get("onnx", {})
        file = file or entry.get("file", "model.onnx")
        path = Path(package_dir) / file
        if not path.is_file():
            raise BackendUnavailableError(
                f"{path} does not exist: export the package first (falconet export {package_dir} --format onnx).",
                code="ExportNotFound")
        verify_files(package_dir, manifest, [file])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.description = f"onnxruntime {ort.__version__} {self.session.get_providers()[0]}"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
