"""The Predictor: image in, typed predictions out, on any backend.

Preprocessing comes from :mod:`falconet.core.preprocess` and post-processing from
:mod:`falconet.runtime.postprocess`; a backend only runs the network. That is what keeps the
answers of training-time evaluation, every runtime and the server the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from falconet.core.errors import BackendUnavailableError
from falconet.core.images import ImageInput
from falconet.core.manifest import DETECTION, Manifest, load_manifest
from falconet.core.prediction import BoundingBox, Prediction
from falconet.core.preprocess import preprocess
from falconet.runtime.backends import Backend, create_backend
from falconet.runtime.postprocess import BOX_VOTE_POWER, decode_detections, rank_classes


class Predictor:
    def __init__(self, manifest: Manifest, backend: Backend, package_dir: Path | None = None) -> None:
        self.manifest = manifest
        self.backend = backend
        self.package_dir = package_dir
        self.contract = manifest.input.with_layout(backend.layout)
        self.is_detection = manifest.task == DETECTION
        post = manifest.output.get("postprocess", {})
        self.iou_threshold = float(post.get("nms_iou", 0.45))
        self.max_detections = int(post.get("max_detections", 100))
        #: packages written before box voting have no entry: they keep plain NMS
        vote = post.get("box_vote_iou")
        self.vote_iou = None if vote is None else float(vote)
        self.vote_power = float(post.get("box_vote_power", BOX_VOTE_POWER))

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def preprocess(self, image: ImageInput) -> np.ndarray:
        return preprocess(image, self.contract)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for an already preprocessed batch."""
        return self.backend.run(batch)

    def predict(self, image: ImageInput, threshold: float = 0.0, max_detections: int | None = None) -> list[Prediction]:
        return self.predict_batch([image], threshold, max_detections)[0]

    def predict_batch(self, images: Sequence[ImageInput], threshold: float = 0.0,
                      max_detections: int | None = None, batch_size: int = 16) -> list[list[Prediction]]:
        results: list[list[Prediction]] = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.preprocess(im) for im in images[start:start + batch_size]])
            results.extend(self.predict_arrays(batch, threshold, max_detections))
        return results

    def predict_arrays(self, batch: np.ndarray, threshold: float = 0.0, max_detections: int | None = None) -> list[list[Prediction]]:
        return self.from_outputs(self.run(batch), threshold, max_detections)

    def from_outputs(self, outputs: list[np.ndarray], threshold: float = 0.0,
                     max_detections: int | None = None) -> list[list[Prediction]]:
        """Predictions from raw outputs already computed (so a caller that needs both runs once)."""
        batch = outputs[0]
        if self.is_detection:
            boxes, scores = outputs[0], outputs[1]
            # Scores below 1% are never useful and make NMS slow; a lower threshold still applies.
            floor = min(threshold, 0.01) if threshold > 0 else 0.01
            return [self._detections(boxes[i], scores[i], floor, threshold, max_detections) for i in range(len(batch))]
        return [self._classes(row, threshold) for row in outputs[0]]

    def _classes(self, probabilities: np.ndarray, threshold: float) -> list[Prediction]:
        m = self.manifest
        return [Prediction(m.tag_ids[i], m.labels[i], p, i, None, m.tag_types[i]) for i, p in rank_classes(probabilities, threshold)]

    def decode(self, boxes: np.ndarray, scores: np.ndarray, floor: float = 0.01,
               max_detections: int | None = None) -> list[tuple[int, float, float, float, float, float]]:
        """One image's raw detector outputs -> (class, score, x1, y1, x2, y2), with the NMS and box
        voting this package's manifest names (the one place that maps it onto the post-processing)."""
        return decode_detections(boxes, scores, floor, self.iou_threshold, max_detections or self.max_detections,
                                 vote_iou=self.vote_iou, vote_power=self.vote_power)

    def _detections(self, boxes: np.ndarray, scores: np.ndarray, floor: float, threshold: float,
                    max_detections: int | None) -> list[Prediction]:
        m = self.manifest
        found = self.decode(boxes, scores, floor, max_detections)
        return [Prediction(m.tag_ids[c], m.labels[c], s, c, BoundingBox.from_xyxy(x1, y1, x2, y2))
                for c, s, x1, y1, x2, y2 in found if s >= threshold]

    def info(self) -> dict[str, Any]:
        return {"task": self.manifest.task, "labels": self.labels, "backend": getattr(self.backend, "description", self.backend.name)}


def default_backend(package_dir: Path, manifest: Manifest) -> str:
    """ONNX fp32 when exported, else the first other runnable export, else the torch weights."""
    from falconet.runtime.backends import REGISTRY

    runnable = [n for n in manifest.exports if n in REGISTRY and (package_dir / manifest.exports[n].get("file", "")).is_file()]
    if runnable:
        return "onnx" if "onnx" in runnable else runnable[0]
    if (package_dir / "weights.pt").is_file():
        return "torch"
    raise BackendUnavailableError(f"{package_dir} has no exported model file; run falconet export first.", code="ExportNotFound")


def backend_for_file(package_dir: Path, manifest: Manifest, file: Path) -> str:
    """The backend whose export wrote ``file`` (so ``falconet.load("pkg/model-int8.tflite")`` just works)."""
    for name, entry in manifest.exports.items():
        names = [entry.get("file"), *entry.get("extra_files", [])]
        if file.name in names or str(file.relative_to(package_dir)) in names:
            return name
    raise BackendUnavailableError(f"{file} is not an export recorded in {package_dir}/manifest.json.", code="ExportNotFound")


def load(path: str | Path, backend: str | None = None, **options: Any) -> Predictor:
    """Open a model package (its directory, or one exported file in it) and return a ready Predictor."""
    path = Path(path)
    package_dir = path.parent if path.is_file() else path
    manifest = load_manifest(package_dir, verify=False)
    if backend is None and path.is_file():
        backend = backend_for_file(package_dir, manifest, path)
    name = backend or default_backend(package_dir, manifest)
    return Predictor(manifest, create_backend(name, package_dir, manifest, **options), package_dir)
