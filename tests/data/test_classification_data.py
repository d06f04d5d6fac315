import json
import shutil
from pathlib import Path

import pytest

from conftest import COLOURS, draw
from falconet.core.errors import DatasetError, NotEnoughImagesError
from falconet.core.labels import NEGATIVE
from falconet.core.manifest import MULTICLASS, MULTILABEL
from falconet.data.classification import read_classification
from falconet.data.splits import choose_evaluation, kfold, stratified_split


def test_folders_give_multiclass(tag_folders: Path) -> None:
    ds = read_classification(tag_folders)
    assert ds.task == MULTICLASS
    assert ds.labels == ["blue", "red"]
    assert ds.counts() == {"blue": 6, "red": 6}
    assert all(s.sha256 and s.width == 80 for s in ds.samples)


def test_bad_files_are_skipped_with_a_report(tag_folders: Path) -> None:
    (tag_folders / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (tag_folders / "red" / "empty.png").write_bytes(b"")
    draw(tag_folders / "red" / "tiny.png", COLOURS["red"], 99, size=(10, 10))
    shutil.copy(tag_folders / "red" / "red_0.jpg", tag_folders / "blue" / "copy.jpg")
    draw(tag_folders / "red" / "small.jpg", COLOURS["red"], 98, size=(40, 40))
    ds = read_classification(tag_folders)
    kinds = sorted(i.kind for i in ds.issues)
    assert kinds == ["corrupt", "corrupt", "duplicate", "small", "too-small"]
    dup = next(i for i in ds.issues if i.kind == "duplicate")
    assert "differ" in dup.message  # the copy sits under another tag: the user is told
    assert ds.counts() == {"blue": 7, "red": 6}  # blue/ is read first, so red_0 is the copy


def test_too_few_images_is_a_clear_error(tag_folders: Path) -> None:
    for p in list((tag_folders / "blue").iterdir())[:3]:
        p.unlink()
    with pytest.raises(NotEnoughImagesError, match=r"blue \(3\)"):
        read_classification(tag_folders)


def test_negative_folder_and_untagged_test_folder(tag_folders: Path) -> None:
    for i in range(5):
        draw(tag_folders / "NEGATIVE" / f"n{i}.jpg", COLOURS["green"], 50 + i)
    draw(tag_folders / "test" / "t.jpg", COLOURS["green"], 70)
    ds = read_classification(tag_folders)
    assert ds.labels == ["blue", "red", NEGATIVE]
    assert sum(s.labels == [NEGATIVE] for s in ds.samples) == 5
    assert any(i.kind == "untagged-folder" for i in ds.issues)


def test_split_folders_are_explained(tmp_path: Path, tag_folders: Path) -> None:
    shutil.copytree(tag_folders, tmp_path / "root" / "train")
    with pytest.raises(DatasetError, match="--val"):
        read_classification(tmp_path / "root")


def test_csv_multilabel_with_negative(tmp_path: Path) -> None:
    rows = ["image,tags"]
    for i in range(6):
        draw(tmp_path / f"rb{i}.jpg", COLOURS["red"], i)
        rows.append(f"rb{i}.jpg,red;blue")
        draw(tmp_path / f"r{i}.jpg", COLOURS["red"], 10 + i)
        rows.append(f"r{i}.jpg,red")
    draw(tmp_path / "n.jpg", COLOURS["green"], 30)
    rows.append("n.jpg,negative")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    ds = read_classification(tmp_path / "tags.csv")
    assert ds.task == MULTILABEL and ds.labels == ["blue", "red"]
    assert ds.counts() == {"blue": 6, "red": 12}
    assert next(s for s in ds.samples if s.path.name == "n.jpg").labels == []
    with pytest.raises(DatasetError, match="several tags"):
        read_classification(tmp_path / "tags.csv", task="multiclass")


def test_negative_with_a_regular_tag_is_refused(tmp_path: Path) -> None:
    draw(tmp_path / "a.jpg", COLOURS["red"], 1)
    (tmp_path / "t.csv").write_text("image,tags\na.jpg,red;Negative\n")
    with pytest.raises(DatasetError) as info:
        read_classification(tmp_path / "t.csv")
    assert info.value.code == "ErrorNegativeAndRegularTagOnSameImage"


def test_coco_json_classification(tmp_path: Path) -> None:
    images, anns = [], []
    for i in range(5):
        draw(tmp_path / "images" / f"{i}.jpg", COLOURS["red"], i)
        images.append({"id": i, "file_name": f"{i}.jpg"})
        anns += [{"id": 2 * i, "image_id": i, "category_id": 1}, {"id": 2 * i + 1, "image_id": i, "category_id": 2}]
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "labels.json").write_text(json.dumps(data))
    ds = read_classification(tmp_path / "labels.json")
    assert ds.task == MULTILABEL and ds.counts() == {"cat": 5, "dog": 5}


def test_imbalance_is_reported(tag_folders: Path) -> None:
    for i in range(30):
        draw(tag_folders / "red" / f"more{i}.jpg", COLOURS["red"], 100 + i)
    ds = read_classification(tag_folders)
    assert any(i.kind == "imbalance" for i in ds.issues)


def test_splits_are_stratified_reproducible_and_disjoint(tag_folders: Path) -> None:
    ds = read_classification(tag_folders)
    train, held = stratified_split(ds.samples, 0.34, seed=3)
    assert (train, held) == stratified_split(ds.samples, 0.34, seed=3)
    assert not set(train) & set(held) and len(train) + len(held) == 12
    assert sorted(ds.samples[i].labels[0] for i in held) == ["blue", "blue", "red", "red"]
    folds = kfold(ds.samples, 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(12))
    assert all(sorted(ds.samples[i].labels[0] for i in f) == ["blue", "blue", "red", "red"] for f in folds)
    assert choose_evaluation({"a": 6, "b": 40}) == "kfold"
    assert choose_evaluation({"a": 30, "b": 40}) == "holdout"
