"""The model packages a server answers for, chosen by the publishedName of the request path.

Opening (reading manifests, checking that the chosen export exists) is fast and happens before
the server binds, so a wrong path fails the command at once. Loading (runtime sessions, one per
inference worker, so backends that are not thread-safe such as LiteRT interpreters are never
shared) and the warm-up run happen after the server is up; ``/readyz`` turns 200 when they end.
"""
from __future__ import annotations

import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from falconet.core.errors import FalconetError
from falconet.core.manifest import DETECTION, Manifest, load_manifest
from falconet.server.errors import ModelNotFoundError, UnavailableError, WrongTaskError

if TYPE_CHECKING:  # pragma: no cover
    from falconet.core.prediction import Prediction
    from falconet.runtime.predictor import Predictor

#: Namespace of package ids, so the same trained package always answers with the same iteration id.
_PACKAGE_NAMESPACE = uuid.UUID("1d5b7c2e-8f43-4f0a-9c61-3b2f7a9e0c55")


def package_id(manifest: Manifest) -> str:
    """A stable id for one trained package: the same after re-exporting or bundling it."""
    return str(uuid.uuid5(_PACKAGE_NAMESPACE, f"{manifest.created}|{manifest.project}|{'|'.join(manifest.tag_ids)}"))


def parse_model_specs(packages: Sequence[Path], named: Sequence[str]) -> list[tuple[str, Path]]:
    """``runs/a`` -> ("a", runs/a); ``--model name=path`` -> (name, path). Names must be unique."""
    specs = [(Path(p).resolve().name, Path(p)) for p in packages]
    for item in named:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise FalconetError(f"--model takes NAME=PATH, got {item!r}.", code="BadRequest", status=400)
        specs.append((name.strip(), Path(path.strip())))
    if not specs:
        raise FalconetError("Give at least one model package to serve.", code="BadRequest", status=400)
    names = [n for n, _ in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FalconetError(f"Two packages would be served as {', '.join(duplicates)}; name them with --model NAME=PATH.",
                            code="BadRequest", status=400)
    return specs


@dataclass
class ServedModel:
    name: str
    package_dir: Path
    manifest: Manifest
    backend: str
    iteration: str
    ready: bool = False
    error: Optional[FalconetError] = None
    backend_description: str = ""
    _pool: "queue.SimpleQueue[Predictor]" = field(default_factory=queue.SimpleQueue, repr=False)

    @property
    def is_detection(self) -> bool:
        return self.manifest.task == DETECTION

    @property
    def project(self) -> str:
        return self.manifest.project

    def load(self, workers: int, threads: Optional[int]) -> None:
        """One predictor per worker, each warmed up with a synthetic image of the input size."""
        import numpy as np

        from falconet.runtime.predictor import Predictor
        from falconet.runtime.backends import create_backend

        options = {"threads": threads} if threads else {}
        rng = np.random.default_rng(0)
        size = (self.manifest.input.height, self.manifest.input.width, 3)
        for _ in range(workers):
            predictor = Predictor(self.manifest, create_backend(self.backend, self.package_dir, self.manifest, **options),
                                  self.package_dir)
            for _ in range(2):  # the first runs allocate arenas and pick kernels
                predictor.predict(rng.integers(0, 256, size=size, dtype=np.uint8))
            self.backend_description = getattr(predictor.backend, "description", self.backend)
            self._pool.put(predictor)
        self.ready = True

    def predict(self, image: Any, threshold: float = 0.0) -> "list[Prediction]":
        """Runs in a worker thread; the gate guarantees a free predictor is waiting in the pool."""
        predictor = self._pool.get()
        try:
            return predictor.predict(image, threshold)
        finally:
            self._pool.put(predictor)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.manifest.task, "labels": self.manifest.labels, "backend": self.backend,
                "runtime": self.backend_description, "project": self.project, "iteration": self.iteration,
                "ready": self.ready, "error": self.error.to_dict() if self.error else None}


class ModelSet:
    """The served models in the order given; the first is the default for the container routes."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {m.name: m for m in models}
        self.default = models[0]

    @classmethod
    def open(cls, specs: Sequence[tuple[str, Path]], backend: Optional[str] = None) -> "ModelSet":
        from falconet.runtime.backends import REGISTRY
        from falconet.runtime.predictor import default_backend

        models = []
        for name, path in specs:
            path = Path(path)
            if not (path / "manifest.json").is_file():
                raise FalconetError(f"{path} is not a model package (no manifest.json).", code="InvalidModelPackage")
            manifest = load_manifest(path, verify=False)
            chosen = backend or default_backend(path, manifest)
            if backend is None and chosen == "torch":
                # The server is torch-free by design; serving weights.pt needs an explicit choice.
                raise FalconetError(f"{path} has no exported model: run falconet export {path} first "
                                    f"(or pass --backend torch).", code="ExportNotFound")
            if chosen not in REGISTRY:
                raise FalconetError(f"Unknown backend {chosen!r}; known: {', '.join(REGISTRY)}.", code="BackendUnavailable")
            if chosen != "torch" and chosen not in manifest.exports:
                raise FalconetError(f"{path} has no {chosen} export: run falconet export {path} --format {chosen}.",
                                    code="ExportNotFound")
            models.append(ServedModel(name, path, manifest, chosen, package_id(manifest)))
        return cls(models)

    def load(self, workers: int, threads: Optional[int], log: Callable[[str], None] = print) -> None:
        for model in self.models.values():
            try:
                model.load(workers, threads)
                log(f"model {model.name!r} ready: {model.manifest.task}, {len(model.manifest.labels)} tags, "
                    f"{model.backend_description} x{workers} workers")
            except FalconetError as exc:
                model.error = exc
                log(f"model {model.name!r} failed to load: [{exc.code}] {exc.message}")
            except Exception as exc:  # noqa: BLE001 - reported on /readyz and in the log, never swallowed
                model.error = FalconetError(f"{type(exc).__name__}: {exc}", code="ErrorPredictionModelNotFound", status=503)
                log(f"model {model.name!r} failed to load: {model.error.message}")

    def load_in_background(self, workers: int, threads: Optional[int], log: Callable[[str], None] = print) -> threading.Thread:
        thread = threading.Thread(target=self.load, args=(workers, threads, log), name="falconet-load", daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    def select(self, published_name: Optional[str], task: Optional[str]) -> ServedModel:
        """The model a request names (with one model any name works), checked against the route's task."""
        if published_name is None or len(self.models) == 1:
            model = self.default
        elif published_name in self.models:
            model = self.models[published_name]
        else:
            raise ModelNotFoundError(f"No model is published as {published_name!r}; this server serves "
                                     f"{', '.join(repr(n) for n in self.models)}.")
        if task == "classify" and model.is_detection:
            raise WrongTaskError(f"{model.name!r} is an object detection model: use the /detect/ route.")
        if task == "detect" and not model.is_detection:
            raise WrongTaskError(f"{model.name!r} is a classification model: use the /classify/ route.")
        if model.error is not None:
            raise UnavailableError(f"Model {model.name!r} could not be loaded: {model.error.message}",
                                   code="ErrorPredictionModelNotFound", retry_after_s=30)
        if not model.ready:
            raise UnavailableError(f"Model {model.name!r} is still loading; retry shortly.",
                                   code="ErrorPredictionModelNotCached")
        return model
