"""manifest.json: the contract between the rooms.

A model package is a directory any runtime can load without the code that trained it. The
manifest says what the model is (task, labels, input and output contracts), how good it is
(metrics, measured on images it did not train on) and what every exported file was checked
against. It is validated on load so a damaged or foreign package fails with a clear error.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falconet.core.errors import ManifestError, PackageIntegrityError
from falconet.core.labels import NEGATIVE, read_labels, tag_id
from falconet.core.preprocess import InputContract

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LABELS = "labels.txt"

MULTICLASS = "classification-multiclass"
MULTILABEL = "classification-multilabel"
DETECTION = "detection"
TASKS = (MULTICLASS, MULTILABEL, DETECTION)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a JSON file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class Manifest:
    task: str
    domain: str
    labels: list[str]
    input: InputContract
    output: dict[str, Any]
    project: str = ""
    tag_ids: list[str] = field(default_factory=list)
    backbone: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.tag_ids:
            self.tag_ids = [tag_id(name, self.project) for name in self.labels]

    @property
    def tag_types(self) -> list[str]:
        return ["Negative" if name == NEGATIVE else "Regular" for name in self.labels]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "format": "falconet-model-package",
            "created": self.created,
            "task": self.task,
            "domain": self.domain,
            "project": self.project,
            "backbone": self.backbone,
            "labels": list(self.labels),
            "tag_ids": list(self.tag_ids),
            "input": self.input.to_dict(),
            "output": self.output,
            "training": self.training,
            "metrics": self.metrics,
            "exports": self.exports,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        validate(data)
        return cls(
            task=data["task"],
            domain=data["domain"],
            labels=list(data["labels"]),
            tag_ids=list(data.get("tag_ids") or []),
            input=InputContract.from_dict(data["input"]),
            output=dict(data["output"]),
            project=data.get("project", ""),
            backbone=data.get("backbone", ""),
            training=dict(data.get("training") or {}),
            metrics=dict(data.get("metrics") or {}),
            files=dict(data.get("files") or {}),
            exports=dict(data.get("exports") or {}),
            created=data.get("created", ""),
            schema_version=data["schema_version"],
        )

    def record_file(self, package_dir: Path, relative: str) -> None:
        path = Path(package_dir) / relative
        self.files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}

    def save(self, package_dir: Path) -> Path:
        path = Path(package_dir) / MANIFEST
        write_json_atomic(path, self.to_dict())
        return path


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "task": str,
    "domain": str,
    "labels": list,
    "input": dict,
    "output": dict,
}


def validate(data: Any) -> None:
    """Raise ManifestError naming the first problem found."""
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must hold a JSON object.")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise ManifestError(f"manifest.json lacks the required key {key!r}.")
        if not isinstance(data[key], kind):
            raise ManifestError(f"manifest.json key {key!r} has the wrong type ({type(data[key]).__name__}).")
    if data["schema_version"] > SCHEMA_VERSION or data["schema_version"] < 1:
        raise ManifestError(
            f"manifest.json has schema version {data['schema_version']}; this Falconet reads "
            f"versions 1 to {SCHEMA_VERSION}. Upgrade Falconet to load it."
        )
    if data["task"] not in TASKS:
        raise ManifestError(f"Unknown task {data['task']!r}; expected one of {', '.join(TASKS)}.")
    labels = data["labels"]
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ManifestError("manifest.json 'labels' must be a non-empty list of names.")
    if len(set(labels)) != len(labels):
        raise ManifestError("manifest.json 'labels' contains duplicates.")
    tag_ids = data.get("tag_ids")
    if tag_ids and len(tag_ids) != len(labels):
        raise ManifestError("manifest.json 'tag_ids' and 'labels' differ in length.")
    for key in ("width", "height"):
        value = data["input"].get(key)
        if not isinstance(value, int) or value <= 0:
            raise ManifestError(f"manifest.json input.{key} must be a positive integer.")
    try:
        InputContract.from_dict(data["input"])
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest.json 'input' is invalid: {exc}") from exc


def load_manifest(package_dir: Path, *, verify: bool = True) -> Manifest:
    """Read and validate a package's manifest; with ``verify`` also check labels.txt and hashes."""
    package_dir = Path(package_dir)
    path = package_dir / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{package_dir} is not a Falconet model package (no {MANIFEST}).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    manifest = Manifest.from_dict(data)
    if verify:
        labels_path = package_dir / LABELS
        if labels_path.is_file() and read_labels(labels_path) != manifest.labels:
            raise PackageIntegrityError(f"{labels_path} does not match the labels in {MANIFEST}.")
        verify_files(package_dir, manifest)
    return manifest


def verify_files(package_dir: Path, manifest: Manifest, names: list[str] | None = None) -> None:
    for name in names if names is not None else list(manifest.files):
        entry = manifest.files.get(name)
        path = Path(package_dir) / name
        if entry is None:
            continue
        if not path.is_file():
            raise PackageIntegrityError(f"The package lists {name} but the file is missing.")
        if path.stat().st_size != entry.get("bytes", path.stat().st_size) or sha256_file(path) != entry["sha256"]:
            raise PackageIntegrityError(f"{name} does not match its sha256 in {MANIFEST}: the file was changed or damaged.")
