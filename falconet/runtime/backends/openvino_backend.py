"""OpenVINO on the CPU: runs model.xml, model-fp16.xml or model-int8.xml.

The CPU plugin chooses bf16 on its own on CPUs that have it, which moves outputs well beyond the
parity tolerance; so the backend always compiles with the ``inference_precision`` the export
recorded (f32 when an entry predates the field), and with an explicit thread count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falconet.core.errors import BackendUnavailableError, FalconetError
from falconet.core.manifest import Manifest
from falconet.runtime.backends import default_threads, export_file

DEFAULT_INFERENCE_PRECISION = "f32"


class OpenVINOBackend:
    """One compiled model and one infer request; any batch size (the IR keeps a dynamic batch)."""

    layout = "NCHW"

    def __init__(self, package_dir: Path, manifest: Manifest, *, export_name: str = "openvino",
                 export_entry: dict[str, Any] | None = None, threads: int | None = None) -> None:
        from falconet.core.vendor_telemetry import import_openvino

        ov = import_openvino()
        # export_file checks the sha256 of model.xml and of the .bin listed in extra_files
        path, entry = export_file(package_dir, manifest, export_name, export_entry)
        weights = [Path(package_dir) / f for f in entry.get("extra_files", []) if f.endswith(".bin")]
        if not weights or not weights[0].is_file():
            raise BackendUnavailableError(f"{path.name} has no weights file (.bin) beside it: export it again.",
                                          code="ExportNotFound")
        self.name = export_name
        self.threads = int(threads or default_threads())
        self.inference_precision = str(entry.get("inference_precision", DEFAULT_INFERENCE_PRECISION))
        core = ov.Core()
        model = core.read_model(str(path), str(weights[0]))
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
        })
        self.request = self.compiled.create_infer_request()
        self.outputs = [self._output(name) for name in manifest.output["names"]]
        self.image_shape = (3, manifest.input.height, manifest.input.width)
        #: what the plugin really compiled with ("f32", "bf16", ...), read back rather than assumed
        self.compiled_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.description = (f"openvino {ov.__version__} CPU, inference precision {self.compiled_precision}, "
                            f"{self.threads} threads ({path.name}, {entry.get('precision', 'fp32')} file)")

    def _output(self, name: str) -> Any:
        for output in self.compiled.outputs:
            if name in output.get_names():
                return output
        raise BackendUnavailableError(f"The OpenVINO model has no output named {name!r}: export it again.",
                                      code="ExportNotFound")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Float NCHW batch (any size, the IR's batch is dynamic) -> float outputs in manifest order."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != self.image_shape:
            raise FalconetError(f"{self.name} takes NCHW batches of shape (N, {', '.join(map(str, self.image_shape))}), "
                                f"got {batch.shape}.", code="BadRequestInputShape", status=400)
        if not len(batch):
            return [np.zeros((0, *(d.get_length() for d in o.get_partial_shape()[1:])), np.float32) for o in self.outputs]
        result = self.request.infer({0: batch})
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[output], dtype=np.float32, copy=True) for output in self.outputs]
