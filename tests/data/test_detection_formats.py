"""Detection dataset readers, validation, writers and conversion (falconet.data.detection).

Every test builds its own tiny images in tmp_path; only ``test_real_datasets`` reads the
shared datasets, and it skips when they are not there.
"""
from __future__ import annotations

import itertools
import json
import os
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falconet.core.errors import DatasetError, NotEnoughImagesError
from falconet.core.images import load_image
from falconet.data.detection import convert, detect_format, read_detection, write_detection
from falconet.data.detection.validate import stored_to_upright
from falconet.data.detection.yolo import parse_names_yaml
from falconet.data.types import Box, Dataset

_seed = itertools.count()


def make_image(path: Path, size: tuple[int, int] = (40, 32), fmt: str | None = None, exif=None) -> Path:
    """A unique noise image (unique bytes, so no accidental duplicates)."""
    rng = np.random.default_rng(next(_seed))
    w, h = size
    image = Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or {".png": "PNG", ".bmp": "BMP"}.get(path.suffix.lower(), "JPEG")
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(path, format=fmt, **kwargs)
    return path


def voc_xml(path: Path, filename: str, size: tuple[int, int], objects: list[tuple]) -> Path:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>x</folder><filename>{filename}</filename><path>C:\\a\\{filename}</path>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )
    return path


def voc_pair(folder: Path, stem: str, objects: list[tuple], size=(40, 32), stated=None, ext=".jpg", fmt=None) -> Path:
    image = make_image(folder / f"{stem}{ext}", size, fmt)
    voc_xml(folder / f"{stem}.xml", image.name, stated if stated is not None else size, objects)
    return image


def kinds(dataset: Dataset) -> Counter:
    return Counter(i.kind for i in dataset.issues)


def issue_paths(dataset: Dataset, kind: str) -> set[str]:
    return {Path(i.path).name for i in dataset.issues if i.kind == kind}


def boxes_of(dataset: Dataset, name: str) -> list[Box]:
    [sample] = [s for s in dataset.samples if Path(s.path).name == name]
    return sample.boxes


# ------------------------------------------------------------------------------------ VOC

def test_voc_side_by_side_reads_real_sizes_and_normalises(tmp_path: Path) -> None:
    voc_pair(tmp_path, "a", [("cat", 4, 8, 20, 24)], size=(40, 32))
    voc_pair(tmp_path, "b", [("dog", 0, 0, 64, 48), ("cat", 10, 10, 30, 20)], size=(64, 48), stated=(0, 0))
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert ds.task == "detection" and ds.format == "voc" and ds.labels == ["cat", "dog"]
    assert [(Path(s.path).name, s.width, s.height) for s in ds.samples] == [("a.jpg", 40, 32), ("b.jpg", 64, 48)]
    assert boxes_of(ds, "a.jpg") == [Box("cat", 0.1, 0.25, 0.5, 0.75)]
    # 0x0 in the XML is not a mismatch: the real size is used silently
    assert boxes_of(ds, "b.jpg") == [Box("dog", 0.0, 0.0, 1.0, 1.0), Box("cat", 10 / 64, 10 / 48, 30 / 64, 20 / 48)]
    assert "size-mismatch" not in kinds(ds)
    assert all(len(s.sha256) == 64 for s in ds.samples)
    assert ds.counts() == {"cat": 2, "dog": 1}


@pytest.mark.parametrize("ann,img", [("annotations", "images"), ("Annotations", "JPEGImages")])
def test_voc_split_folder_layouts(tmp_path: Path, ann: str, img: str) -> None:
    for i in range(3):
        make_image(tmp_path / img / f"im{i}.jpg")
        voc_xml(tmp_path / ann / f"im{i}.xml", f"im{i}.jpg", (40, 32), [("cat", 2, 2, 30, 30)])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("filename,class\n")
    assert detect_format(tmp_path) == "voc"
    ds = read_detection(tmp_path, "voc", min_images_per_tag=3)
    assert len(ds.samples) == 3 and ds.counts() == {"cat": 3}


def test_voc_size_mismatch_is_reported_and_real_size_used(tmp_path: Path) -> None:
    voc_pair(tmp_path, "a", [("cat", 4, 8, 20, 24)], size=(40, 32), stated=(80, 64))
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert issue_paths(ds, "size-mismatch") == {"a.xml"}
    assert boxes_of(ds, "a.jpg") == [Box("cat", 0.1, 0.25, 0.5, 0.75)]


def test_voc_image_without_xml_is_background_and_xml_without_image_is_reported(tmp_path: Path) -> None:
    voc_pair(tmp_path, "a", [("cat", 4, 8, 20, 24)])
    make_image(tmp_path / "empty.jpg")
    voc_xml(tmp_path / "ghost.xml", "ghost.jpg", (40, 32), [("cat", 1, 1, 9, 9)])
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    make_image(tmp_path / "broken.jpg")
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert sorted(Path(s.path).name for s in ds.samples) == ["a.jpg", "empty.jpg"]
    assert boxes_of(ds, "empty.jpg") == []
    assert issue_paths(ds, "no-boxes") == {"empty.jpg"}
    assert [i.severity for i in ds.issues if i.kind == "no-boxes"] == ["info"]
    assert issue_paths(ds, "missing-image") == {"ghost.xml"}
    assert issue_paths(ds, "bad-annotation") == {"broken.xml"}


# ------------------------------------------------------------------------- validation rules

def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a huge size but holds no pixel data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_corrupt_and_truncated_images_are_skipped(tmp_path: Path) -> None:
    voc_pair(tmp_path, "good", [("cat", 4, 8, 20, 24)])
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all")
    voc_xml(tmp_path / "garbage.xml", "garbage.jpg", (40, 32), [("cat", 1, 1, 9, 9)])
    whole = make_image(tmp_path / "cut.jpg", (64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    voc_xml(tmp_path / "cut.xml", "cut.jpg", (64, 64), [("cat", 1, 1, 9, 9)])
    (tmp_path / "empty.png").write_bytes(b"")
    make_image(tmp_path / "tiny.png", (8, 8))
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))
    (tmp_path / "wide.png").write_bytes(_png_header(20000, 100))
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert [Path(s.path).name for s in ds.samples] == ["good.jpg"]
    assert issue_paths(ds, "corrupt") == {"garbage.jpg", "cut.jpg", "empty.png"}
    assert issue_paths(ds, "too-small") == {"tiny.png"}
    assert issue_paths(ds, "too-large") == {"bomb.png", "wide.png"}
    assert all(i.severity == "warning" for i in ds.issues if i.kind in ("corrupt", "too-small", "too-large"))


def test_jpg_that_is_really_png_is_reported_and_used(tmp_path: Path) -> None:
    voc_pair(tmp_path, "liar", [("cat", 4, 8, 20, 24)], fmt="PNG")
    voc_pair(tmp_path, "honest", [("cat", 4, 8, 20, 24)])
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert len(ds.samples) == 2
    assert issue_paths(ds, "extension-mismatch") == {"liar.jpg"}
    [issue] = [i for i in ds.issues if i.kind == "extension-mismatch"]
    assert "PNG" in issue.message and issue.severity == "warning"


def test_boxes_outside_are_clipped_and_degenerate_boxes_dropped(tmp_path: Path) -> None:
    voc_pair(tmp_path, "a", [
        ("cat", -10, 4, 20, 40),    # outside left and bottom: clipped
        ("cat", 10, 10, 10, 20),    # zero width: dropped
        ("cat", 30, 20, 10, 25),    # inverted: dropped
        ("cat", 40, 5, 60, 20),     # entirely right of the image: nothing left, dropped
        ("cat", 5, 31.6, 20, 40),   # 0.4 px tall after clipping: dropped
        ("cat", 0, 0, 40.3, 32),    # 0.3 px beyond the edge: clipped silently
    ])
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert boxes_of(ds, "a.jpg") == [Box("cat", 0.0, 0.125, 0.5, 1.0), Box("cat", 0.0, 0.0, 1.0, 1.0)]
    assert kinds(ds)["box-clipped"] == 1
    assert kinds(ds)["box-degenerate"] == 4


def test_exact_duplicates_keep_one(tmp_path: Path) -> None:
    first = voc_pair(tmp_path, "a", [("cat", 4, 8, 20, 24)])
    (tmp_path / "b.jpg").write_bytes(first.read_bytes())
    voc_xml(tmp_path / "b.xml", "b.jpg", (40, 32), [("cat", 1, 1, 9, 9)])
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert [Path(s.path).name for s in ds.samples] == ["a.jpg"]
    assert issue_paths(ds, "duplicate") == {"b.jpg"}


def test_tag_below_minimum_raises_with_counts(tmp_path: Path) -> None:
    for i in range(4):
        voc_pair(tmp_path, f"c{i}", [("cat", 4, 8, 20, 24)])
    voc_pair(tmp_path, "d0", [("dog", 4, 8, 20, 24), ("dog", 1, 1, 9, 9)])
    with pytest.raises(NotEnoughImagesError) as info:
        read_detection(tmp_path, min_images_per_tag=3)
    assert "'dog' has 1" in info.value.message and "cat" not in info.value.message
    assert info.value.code == "BadRequestNotEnoughImagesPerTag"
    with pytest.raises(NotEnoughImagesError) as info:
        read_detection(tmp_path)  # default minimum: 15, Custom Vision's
    assert "'cat' has 4" in info.value.message and "15" in info.value.message
    lenient = read_detection(tmp_path, min_images_per_tag=3, strict=False)
    assert [(i.kind, i.severity) for i in lenient.issues if i.kind == "not-enough-images"] == [("not-enough-images", "error")]


def test_unknown_tag_is_an_error_unless_not_strict(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    make_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.4 0.4\n")
    with pytest.raises(DatasetError) as info:
        read_detection(tmp_path, min_images_per_tag=0)
    assert "class 5" in info.value.message
    assert [i.kind for i in info.value.issues] == ["unknown-tag"]  # type: ignore[attr-defined]
    ds = read_detection(tmp_path, min_images_per_tag=0, strict=False)
    assert boxes_of(ds, "a.jpg") == [Box("cat", 0.4, 0.4, 0.6, 0.6)]
    assert [(i.kind, i.severity) for i in ds.issues if i.kind == "unknown-tag"] == [("unknown-tag", "error")]


def test_exif_orientation_gives_upright_size_and_rotates_stored_frame_boxes(tmp_path: Path) -> None:
    stored = np.zeros((30, 60, 3), dtype=np.uint8)  # stored 60 wide, 30 high
    stored[5:15, 40:55] = 255  # a white patch: x 40..55, y 5..15 on the stored grid
    for orientation in range(1, 9):
        folder = tmp_path / f"o{orientation}"
        folder.mkdir()
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(folder / "a.jpg", exif=exif, quality=100)
        voc_xml(folder / "a.xml", "a.jpg", (60, 30), [("patch", 40, 5, 55, 15)])
        ds = read_detection(folder, min_images_per_tag=0)
        [sample] = ds.samples
        upright = np.asarray(load_image(folder / "a.jpg"))
        assert (sample.width, sample.height) == (upright.shape[1], upright.shape[0])
        [box] = sample.boxes
        if orientation in (2, 3, 4):
            # Same size either way: nothing shows which frame the boxes were drawn on, so they
            # are taken as drawn on the upright image (the documented default).
            assert (box.x1, box.y1, box.x2, box.y2) == (40 / 60, 5 / 30, 55 / 60, 15 / 30)
            assert "exif-rotated" not in kinds(ds)
            continue
        x1, y1 = round(box.x1 * sample.width), round(box.y1 * sample.height)
        x2, y2 = round(box.x2 * sample.width), round(box.y2 * sample.height)
        inside = upright[y1:y2, x1:x2].astype(float)
        assert inside.mean() > 200, orientation  # the box holds the patch ...
        assert upright.astype(float).sum() - inside.sum() < 0.05 * inside.sum()  # ... all of it
        assert ("exif-rotated" in kinds(ds)) == (orientation != 1)
    np.testing.assert_allclose(stored_to_upright(np.array([[0.1, 0.2, 0.3, 0.4]]), 6), [[0.6, 0.1, 0.8, 0.3]])


# ----------------------------------------------------------------------------------- COCO

def _coco(tmp_path: Path, images_sub: str = "images") -> Path:
    make_image(tmp_path / images_sub / "a.jpg", (40, 32))
    make_image(tmp_path / images_sub / "b.png", (50, 20))
    make_image(tmp_path / images_sub / "c.jpg", (40, 32))
    body = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 32},
            {"id": 2, "file_name": "some/old/path/b.png", "width": 0, "height": 0},
            {"id": 3, "file_name": "c.jpg", "width": 40, "height": 32},
            {"id": 4, "file_name": "gone.jpg", "width": 40, "height": 32},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 8, 16, 16], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 2, 20, 10]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 20], "iscrowd": 1},
        ],
        "categories": [{"id": 0, "name": "fruits"}, {"id": 1, "name": "pear"}, {"id": 2, "name": "apple"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(body))
    return tmp_path / "instances.json"


def test_coco_reads_folder_or_file(tmp_path: Path) -> None:
    json_path = _coco(tmp_path)
    assert detect_format(tmp_path) == "coco" and detect_format(json_path) == "coco"
    for source in (tmp_path, json_path):
        ds = read_detection(source, min_images_per_tag=0)
        assert ds.format == "coco" and ds.labels == ["apple", "pear"]
        assert boxes_of(ds, "a.jpg") == [Box("apple", 0.1, 0.25, 0.5, 0.75)]
        assert boxes_of(ds, "b.png") == [Box("pear", 0.1, 0.1, 0.5, 0.6)]
        assert boxes_of(ds, "c.jpg") == []
        k = kinds(ds)
        assert k["crowd"] == 1 and k["missing-image"] == 1 and k["no-boxes"] == 1
        assert issue_paths(ds, "unused-tag") == {tmp_path.name}  # "fruits" is declared, never used


def test_coco_unknown_category_and_several_jsons(tmp_path: Path) -> None:
    json_path = _coco(tmp_path)
    body = json.loads(json_path.read_text())
    body["annotations"].append({"id": 9, "image_id": 3, "category_id": 7, "bbox": [1, 1, 5, 5]})
    json_path.write_text(json.dumps(body))
    with pytest.raises(DatasetError, match="category_id 7"):
        read_detection(tmp_path, min_images_per_tag=0)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DatasetError, match="2 JSON files"):
        read_detection(tmp_path, "coco", min_images_per_tag=0)


# ----------------------------------------------------------------------------------- YOLO

@pytest.mark.parametrize("text,expected", [
    ("names: [cat, 'dog', \"hot dog\"]\n", ["cat", "dog", "hot dog"]),
    ("nc: 2\nnames: ['a b', c]  # comment\n", ["a b", "c"]),
    ("path: ../x\nnames:\n  - cat\n  - 'dog'\ntrain: images\n", ["cat", "dog"]),
    ("names:\n  0: cat\n  1: \"dog: big\"\n\nval: v\n", ["cat", "dog: big"]),
    ("names: {0: cat, 1: dog}\n", ["cat", "dog"]),
    ("names: [\n  cat,\n  dog\n]\n", ["cat", "dog"]),
    ("train: images\n", None),
])
def test_yaml_names_parser(text: str, expected: list[str] | None) -> None:
    assert parse_names_yaml(text) == expected


def test_yolo_split_layout_with_data_yaml(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 2\nnames:\n  0: cat\n  1: dog\n")
    make_image(tmp_path / "images" / "train" / "a.jpg", (40, 32))
    make_image(tmp_path / "images" / "train" / "bg.jpg")
    make_image(tmp_path / "images" / "val" / "v.png", (20, 40))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.1 0.1\n\n")
    (tmp_path / "labels" / "val" / "v.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.6\n1 0.5 oops\n")
    assert detect_format(tmp_path) == "yolo"
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert ds.labels == ["cat", "dog"] and len(ds.samples) == 3
    a = boxes_of(ds, "a.jpg")
    assert a[0].label == "dog" and np.allclose([a[0].x1, a[0].y1, a[0].x2, a[0].y2], [0.25, 0.25, 0.75, 0.75])
    assert np.allclose([a[1].x1, a[1].y1, a[1].x2, a[1].y2], [0.2, 0.2, 0.3, 0.3])
    v = boxes_of(ds, "v.png")  # a polygon becomes its bounding box
    assert v[0].label == "cat" and np.allclose([v[0].x1, v[0].y1, v[0].x2, v[0].y2], [0.1, 0.1, 0.5, 0.6])
    assert boxes_of(ds, "bg.jpg") == []
    assert kinds(ds)["bad-annotation"] == 1


def test_yolo_classes_txt_and_no_names(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    ds = read_detection(tmp_path, "yolo", min_images_per_tag=0)
    assert ds.labels == ["1"] and "no-class-names" in kinds(ds)
    (tmp_path / "labels" / "classes.txt").write_text("apple\nbanana\n")
    assert read_detection(tmp_path, "yolo", min_images_per_tag=0).labels == ["banana"]
    flat = tmp_path / "darknet"  # a.jpg + a.txt side by side, names in obj.names
    make_image(flat / "a.jpg")
    (flat / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (flat / "obj.names").write_text("thing\n")
    assert detect_format(flat) == "yolo"
    assert read_detection(flat, min_images_per_tag=0).labels == ["thing"]


# -------------------------------------------------------------------------- Custom Vision

def test_customvision_folders_and_regions(tmp_path: Path) -> None:
    make_image(tmp_path / "fork" / "fork_1.jpg", (40, 32))
    make_image(tmp_path / "fork" / "fork_2.jpg", (40, 32))
    make_image(tmp_path / "fork" / "fork_3.jpg", (40, 32))  # not in regions.json
    make_image(tmp_path / "scissors" / "s_1.jpg", (40, 32))
    make_image(tmp_path / "scissors" / "s_2.jpg", (40, 32))
    make_image(tmp_path / "test" / "test_image.jpg")
    make_image(tmp_path / "other" / "bg.jpg")
    regions = {
        "fork_1.jpg": [[0.1, 0.2, 0.5, 0.25]],
        "fork/fork_2.jpg": [[0.0, 0.0, 0.5, 0.5], {"tagName": "scissors", "left": 0.5, "top": 0.5, "width": 0.5, "height": 0.5}],
        "s_1.jpg": [[0.25, 0.25, 0.5, 0.5]],
        "s_2.jpg": [[0.25, 0.25, 0.5]],
        "bg.jpg": [],
        "lost.jpg": [[0.1, 0.1, 0.2, 0.2]],
    }
    (tmp_path / "regions.json").write_text(json.dumps(regions))
    assert detect_format(tmp_path) == "customvision"
    ds = read_detection(tmp_path, min_images_per_tag=0)
    assert ds.labels == ["fork", "scissors"]
    assert boxes_of(ds, "fork_1.jpg") == [Box("fork", 0.1, 0.2, 0.6, 0.45)]
    assert boxes_of(ds, "fork_2.jpg") == [Box("fork", 0.0, 0.0, 0.5, 0.5), Box("scissors", 0.5, 0.5, 1.0, 1.0)]
    assert boxes_of(ds, "bg.jpg") == []
    assert boxes_of(ds, "s_2.jpg") == []  # its only region was malformed
    assert issue_paths(ds, "ignored-folder") == {"test"}
    assert issue_paths(ds, "unlabelled") == {"fork_3.jpg"}
    assert issue_paths(ds, "missing-image") == {"regions.json"}
    assert kinds(ds)["bad-annotation"] == 1
    assert ds.counts() == {"fork": 2, "scissors": 2}


# ----------------------------------------------------------------------- format detection

def test_detect_format_explains_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as info:
        detect_format(tmp_path)
    message = info.value.message
    for looked_for in ("regions.json", "data.yaml", "labels/", "Annotations/", ".xml", ".json"):
        assert looked_for in message
    voc_pair(tmp_path / "train", "a", [("cat", 1, 1, 9, 9)])
    with pytest.raises(DatasetError, match=r"train/ \(voc\)"):
        detect_format(tmp_path)
    with pytest.raises(DatasetError):
        detect_format(tmp_path / "nothing-here")
    with pytest.raises(DatasetError, match="Unknown detection dataset format"):
        read_detection(tmp_path / "train", "tfrecord")


# ---------------------------------------------------------------- writers and round trips

def _source_dataset(tmp_path: Path) -> Path:
    """A COCO dataset with float boxes, a multi-tag image, a background image, a lying PNG,
    and two images of the same name in different folders."""
    src = tmp_path / "src"
    files = [("x/a.jpg", (40, 32), None), ("y/a.jpg", (48, 40), None), ("liar.jpg", (64, 48), "PNG"),
             ("bg.png", (32, 32), None), ("d.bmp", (50, 30), None)]
    for name, size, fmt in files:
        make_image(src / "images" / name, size, fmt)
    boxes = {
        1: [(1, [3.3, 4.1, 20.5, 10.25]), (2, [20, 16, 19.5, 15.9])],
        2: [(2, [0, 0, 48, 40])],
        3: [(1, [10.7, 10.2, 30, 20]), (1, [40, 30, 24, 18]), (3, [1, 1, 5, 5])],
        5: [(3, [2.5, 3.5, 40.25, 20])],
    }
    body = {
        "images": [{"id": i, "file_name": n, "width": s[0], "height": s[1]} for i, (n, s, _) in enumerate(files, 1)],
        "annotations": [{"id": 100 * i + k, "image_id": i, "category_id": c, "bbox": b}
                        for i, bs in boxes.items() for k, (c, b) in enumerate(bs)],
        "categories": [{"id": 1, "name": "apple"}, {"id": 2, "name": "banana pie"}, {"id": 3, "name": "orange"}],
    }
    (src / "annotations.json").write_text(json.dumps(body))
    return src


def _assert_same(a: Dataset, b: Dataset, tol: float) -> None:
    assert a.labels == b.labels
    by_hash = {s.sha256: s for s in b.samples}
    assert len(a.samples) == len(b.samples) == len(by_hash)
    for sample in a.samples:
        other = by_hash[sample.sha256]
        assert (sample.width, sample.height) == (other.width, other.height)
        key = lambda box: (box.label, round(box.x1, 2), round(box.y1, 2))  # noqa: E731
        mine, theirs = sorted(sample.boxes, key=key), sorted(other.boxes, key=key)
        assert [x.label for x in mine] == [x.label for x in theirs]
        for p, q in zip(mine, theirs):
            for axis, size in (("x1", sample.width), ("y1", sample.height), ("x2", sample.width), ("y2", sample.height)):
                limit = tol if tol < 1 else tol / size + 1e-9
                assert abs(getattr(p, axis) - getattr(q, axis)) <= limit, (sample.path, p, q)


@pytest.mark.parametrize("target", ["voc", "coco", "yolo", "customvision"])
def test_round_trip_through_every_format(tmp_path: Path, target: str) -> None:
    source = read_detection(_source_dataset(tmp_path), min_images_per_tag=0)
    assert len(source.samples) == 5 and source.labels == ["apple", "banana pie", "orange"]
    written = convert(tmp_path / "src", tmp_path / target, target)
    assert written.format == target and detect_format(tmp_path / target) == target
    assert "extension-mismatch" not in kinds(read_detection(tmp_path / target, min_images_per_tag=0))
    # VOC stores whole pixels: within one pixel. Everything else: exact to float precision.
    _assert_same(source, written, 1.0 if target == "voc" else 1e-6)
    for second in ("voc", "coco", "yolo", "customvision"):
        if second == target:
            continue
        again = convert(tmp_path / target, tmp_path / f"{target}-{second}", second)
        _assert_same(written, again, 1.0 if second == "voc" else 1e-6)


def test_writer_refuses_non_empty_output_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    ds = read_detection(_source_dataset(tmp_path), min_images_per_tag=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_detection(ds, out, "yolo")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    broken = Dataset("detection", ds.labels, ds.samples + [type(ds.samples[0])(path=tmp_path / "nope.jpg", width=9, height=9)])
    with pytest.raises(OSError):
        write_detection(broken, tmp_path / "half", "coco")
    assert not (tmp_path / "half").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".half")]
    write_detection(ds, tmp_path / "linked", "voc", link=True)
    assert len(list((tmp_path / "linked" / "images").iterdir())) == 5


# ------------------------------------------------------------------------- real datasets

def _datasets_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
    return Path(os.environ.get("FALCONET_DATASETS", default)).resolve()


def test_real_datasets() -> None:
    root = _datasets_dir()
    needed = ["raccoon", "fruit-detection/train", "fruit-detection/test", "cv-fork-scissors"]
    missing = [n for n in needed if not (root / n).is_dir()]
    if missing:
        pytest.skip(f"real datasets not found under {root} (set FALCONET_DATASETS): missing {', '.join(missing)}")

    def boxes(ds: Dataset) -> int:
        return sum(len(s.boxes) for s in ds.samples)

    raccoon = read_detection(root / "raccoon")
    assert raccoon.format == "voc" and raccoon.labels == ["raccoon"]
    # 200 images / 217 boxes on disk; 4 images are byte-identical copies of others (one box each)
    assert kinds(raccoon)["duplicate"] == 4
    assert (len(raccoon.samples), boxes(raccoon)) == (196, 213)
    assert not {"corrupt", "box-degenerate", "unknown-tag"} & set(kinds(raccoon))

    lying = 0
    for split, images, n_boxes in (("train", 240, 465), ("test", 60, 117)):
        fruit = read_detection(root / "fruit-detection" / split)
        assert fruit.format == "voc" and fruit.labels == ["apple", "banana", "orange"]
        assert (len(fruit.samples), boxes(fruit)) == (images, n_boxes)
        assert "size-mismatch" not in kinds(fruit)  # the 0x0 sizes are not mismatches
        lying += kinds(fruit)["extension-mismatch"]
    assert lying == 37

    forks = read_detection(root / "cv-fork-scissors")
    assert forks.format == "customvision" and forks.counts() == {"fork": 20, "scissors": 20}
    assert boxes(forks) == 40 and issue_paths(forks, "ignored-folder") == {"test"}
