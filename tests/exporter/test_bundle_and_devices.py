"""`falconet export --device` and `--bundle`: profiles pick formats; the zip stands on its own."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import COLOURS, copy_package, draw
from falconet.cli import app
from falconet.exporter.registry import TARGETS
from falconet.runtime.backends import REGISTRY
from falconet.runtime.devices import list_devices, load_device

runner = CliRunner()


def test_shipped_profiles_name_known_formats() -> None:
    names = list_devices()
    assert {"rpi4", "rpi5", "jetson-orin-nano", "x86-cpu"} <= set(names)
    for name in names:
        profile = load_device(name)
        assert profile["formats"] and all(f in TARGETS for f in profile["formats"]), name
        assert profile["verified"]["how"] in ("measured", "emulated", "not verified"), name


def test_unknown_device_is_a_clear_error(multiclass_package: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(copy_package(multiclass_package, tmp_path)), "--device", "toaster"])
    assert result.exit_code == 2 and "BadRequestDevice" in result.output and "rpi5" in result.output


def test_device_profile_and_bundle(multiclass_package: Path, tmp_path: Path) -> None:
    package = copy_package(multiclass_package, tmp_path)
    profile = json.loads((Path(__file__).resolve().parents[2] / "devices" / "x86-cpu.json").read_text())
    profile.update({"name": "tiny", "formats": ["onnx"]})
    (tmp_path / "tiny.json").write_text(json.dumps(profile))
    out = tmp_path / "out" / "bundle.zip"
    result = runner.invoke(app, ["export", str(package), "--device", str(tmp_path / "tiny.json"), "--bundle", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((package / "manifest.json").read_text())
    assert list(manifest["exports"]) == ["onnx"]

    with zipfile.ZipFile(out) as archive:
        assert set(archive.namelist()) == {"model.onnx", "manifest.json", "labels.txt", "README.md"}
        archive.extractall(tmp_path / "unzipped")
    unzipped = tmp_path / "unzipped"
    readme = (unzipped / "README.md").read_text()
    assert "float32 values 0-255 in NCHW layout" in readme and "Kotlin" in readme
    assert (unzipped / "labels.txt").read_text().split() == manifest["labels"]

    # The README's own "without Falconet" snippet runs and agrees with the runtime.
    photo = draw(unzipped / "photo.jpg", COLOURS["green"], 999, size=(120, 90))
    snippet = re.findall(r"```python\n(.*?)```", readme, re.S)[1]
    scope: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(unzipped)
    try:
        exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the test runs the documented code
    finally:
        os.chdir(cwd)
    import falconet

    expected = falconet.load(package).predict(photo)
    probabilities = scope["outputs"][0][0]
    assert manifest["labels"][int(np.argmax(probabilities))] == expected[0].tag_name
    assert float(probabilities.max()) == pytest.approx(expected[0].probability, abs=1e-5)


def test_bundle_of_a_format_not_exported_is_refused(multiclass_package: Path, tmp_path: Path) -> None:
    from falconet.core.errors import ExportError
    from falconet.exporter.bundle import write_bundle

    with pytest.raises(ExportError) as info:
        write_bundle(copy_package(multiclass_package, tmp_path), ["tflite"], tmp_path / "b.zip")
    assert info.value.code == "ExportNotFound" and not (tmp_path / "b.zip").exists()
