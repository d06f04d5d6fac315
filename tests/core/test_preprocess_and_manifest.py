import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falconet.core.errors import ManifestError, PackageIntegrityError
from falconet.core.manifest import MULTICLASS, Manifest, load_manifest, validate
from falconet.core.preprocess import STRETCH, InputContract, crop_box, preprocess


def test_center_crop_takes_the_middle_square() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, 20:60] = 255  # the central 40x40 square is white, the sides black
    out = preprocess(image, InputContract(16, 16))
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    assert out.min() > 250  # nothing of the black sides
    assert crop_box(80, 40, InputContract(16, 16)) == (20.0, 0.0, 60.0, 40.0)


def test_stretch_keeps_everything_and_nhwc_layout() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, :20] = 255
    out = preprocess(image, InputContract(16, 16, resize=STRETCH, layout="NHWC"))
    assert out.shape == (16, 16, 3)
    assert out[:, 0].min() > 250 and out[:, -1].max() < 5


def test_contract_round_trips_and_describes_itself() -> None:
    contract = InputContract(224, 224)
    data = contract.to_dict()
    assert "crop the largest centred square" in data["description"]
    assert InputContract.from_dict(json.loads(json.dumps(data))) == contract


def _manifest() -> Manifest:
    return Manifest(task=MULTICLASS, domain="general-compact", labels=["a", "b"], input=InputContract(224, 224),
                    output={"names": ["probabilities"]})


def test_manifest_round_trip_and_hash_check(tmp_path: Path) -> None:
    m = _manifest()
    (tmp_path / "labels.txt").write_text("a\nb\n")
    m.record_file(tmp_path, "labels.txt")
    m.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.labels == ["a", "b"] and loaded.tag_ids == m.tag_ids
    (tmp_path / "labels.txt").write_text("a\nc\n")
    with pytest.raises(PackageIntegrityError):
        load_manifest(tmp_path)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("task"), "task"),
    (lambda d: d.update(schema_version=99), "schema version 99"),
    (lambda d: d.update(task="segmentation"), "Unknown task"),
    (lambda d: d.update(labels=["a", "a"]), "duplicates"),
    (lambda d: d["input"].update(width=0), "input.width"),
    (lambda d: d["input"].update(resize="fisheye"), "input"),
])
def test_manifest_validation_names_the_problem(change, words: str) -> None:
    data = _manifest().to_dict()
    change(data)
    with pytest.raises(ManifestError, match=words):
        validate(data)


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a Falconet model package"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
