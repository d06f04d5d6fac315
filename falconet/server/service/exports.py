"""An iteration's export: the same files and parity figures as ``falconet export``, zipped.

Model formats are the bundle ``falconet export --bundle`` writes (model file, labels, manifest
with parity, README with usage code). The DockerFile platform is a build context: Falconet's
source, ``containers/`` and the model package with its ONNX file, built with
``docker build -f containers/Dockerfile --build-arg MODEL=model -t NAME .``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional

from falconet.core.errors import FalconetError
from falconet.server.service.catalog import export_format

SOURCE_ENV = "FALCONET_SOURCE"
_SOURCE_FILES = ("pyproject.toml", "README.md", "constraints.txt")


def export_path(data_dir: Path, row: Any, platform: str, flavor: Optional[str]) -> Path:
    name = f"{platform}-{flavor}" if flavor else platform
    return Path(data_dir) / "projects" / row.project_id / "iterations" / row.id / "exports" / f"{name}.zip"


def source_tree() -> Path:
    """Falconet's source checkout (``$FALCONET_SOURCE``, else the one this package runs from)."""
    import falconet

    root = Path(os.environ.get(SOURCE_ENV) or Path(falconet.__file__).resolve().parent.parent)
    if not all((root / f).is_file() for f in _SOURCE_FILES) or not (root / "containers" / "Dockerfile").is_file():
        raise FalconetError(f"A Docker build context needs Falconet's source tree (pyproject.toml, containers/); "
                            f"{root} is not one. Set {SOURCE_ENV} to a checkout.", code="ErrorExporterInvalidPlatform",
                            status=400)
    return root


def build_export(data_dir: Path, row: Any, platform: str, flavor: Optional[str]) -> Path:
    from falconet.exporter.bundle import write_bundle
    from falconet.exporter.registry import export

    fmt = export_format(platform, flavor)
    package = Path(data_dir) / "projects" / row.project_id / "iterations" / row.id / "package"
    out = export_path(data_dir, row, platform, flavor)
    model_format = "onnx" if fmt.startswith("docker") else fmt
    from falconet.core.manifest import load_manifest

    if model_format not in load_manifest(package, verify=False).exports:
        export(package, [model_format])
    if not fmt.startswith("docker"):
        return write_bundle(package, [model_format], out)
    return _docker_context(package, out, jetson=fmt == "docker-jetson")


def _docker_context(package: Path, out: Path, jetson: bool) -> Path:
    from falconet.exporter.bundle import write_bundle

    root = source_tree()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".docker-", dir=out.parent))
    try:
        bundle = write_bundle(package, ["onnx"], work / "model.zip")
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        dockerfile = "containers/Dockerfile.jetson" if jetson else "containers/Dockerfile"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in _SOURCE_FILES:
                archive.write(root / name, name)
            for folder in ("falconet", "containers"):
                for path in sorted((root / folder).rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                        archive.write(path, path.relative_to(root).as_posix())
            with zipfile.ZipFile(bundle) as model:
                for member in model.namelist():
                    archive.writestr(f"model/{member}", model.read(member))
            archive.writestr("BUILD.md", _build_readme(dockerfile))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _build_readme(dockerfile: str) -> str:
    run = "docker run --runtime nvidia" if "jetson" in dockerfile else "docker run"
    return "\n".join([
        "# Falconet prediction container: build context",
        "",
        "This folder holds Falconet's runtime source, its Dockerfiles and your model (`model/`, ONNX).",
        "",
        "```",
        f"docker build -f {dockerfile} --build-arg MODEL=model -t my-model .",
        f"{run} -p 8080:8080 my-model",
        "curl -X POST --data-binary @photo.jpg -H 'Content-Type: application/octet-stream' localhost:8080/image",
        "```",
        "",
        "The container answers the hosted service's container routes (`POST /image`, `POST /url`) and its",
        "Prediction API paths, with the same JSON. For a Raspberry Pi build with",
        "`docker buildx build --platform linux/arm64 ...`.",
        "",
    ])
