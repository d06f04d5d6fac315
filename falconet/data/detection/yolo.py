"""YOLO txt: one ``class cx cy w h`` line per box, normalised, one ``.txt`` per image.

Layouts read: ``images/`` + ``labels/`` (flat or with split folders such as
``images/train`` + ``labels/train``, and Roboflow's ``train/images`` + ``train/labels``): the
label of ``.../images/a/b.jpg`` is ``.../labels/a/b.txt``. Without any ``images`` folder, the
``.txt`` sits next to the image (darknet / LabelImg). Every split found is read.

Class names come from ``data.yaml`` / ``dataset.yaml`` (or the only ``.yaml`` in the folder;
``names:`` as a list or an ``index: name`` mapping), else ``classes.txt`` or a ``*.names``
file (also inside ``labels/``). PyYAML is used when installed; otherwise a small parser reads
the ``names:`` key, which is all we need. Without a names file the class numbers are the tag
names (info ``no-class-names``). A class number outside the names list is ``unknown-tag``.

A missing or empty label file means a background image (the ultralytics convention). Lines
with more than four coordinates are segmentation polygons; their bounding box is used.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from falconet.core.boxes import cxcywh_to_xyxy
from falconet.core.errors import DatasetError
from falconet.core.images import image_format
from falconet.data.detection._common import (
    NamePicker,
    RawBox,
    RawDataset,
    RawEntry,
    find_child,
    list_images,
    place_image,
    staged_output,
    unknown_tag,
)
from falconet.data.types import Dataset, Issue

_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def _strip_comment(line: str) -> str:
    """Drop a ``# comment`` that is not inside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return str(json.loads(text))
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _split_flow(body: str) -> list[str]:
    """Split the inside of ``[...]`` / ``{...}`` on commas outside quotes."""
    items, current, quote = [], "", None
    for ch in body:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current)
    return [i for i in (x.strip() for x in items) if i]


def _key_value(item: str) -> tuple[str, str]:
    match = re.match(r"""^\s*("[^"]*"|'[^']*'|[^:]+?)\s*:\s*(.*)$""", item)
    if not match:
        raise ValueError(f"not a key: value pair: {item!r}")
    return _scalar(match.group(1)), _scalar(match.group(2))


def _from_mapping(pairs: list[tuple[str, str]]) -> list[str]:
    mapping = {int(k): v for k, v in pairs}
    if sorted(mapping) != list(range(len(mapping))):
        raise ValueError("names must be numbered 0..N-1")
    return [mapping[i] for i in range(len(mapping))]


def parse_names_yaml(text: str) -> list[str] | None:
    """The ``names`` of a YOLO data.yaml, in class-index order; None when there is no key.

    Reads ``names: [a, b]``, ``names: {0: a, 1: b}``, a block list (``- a``) and a block
    mapping (``0: a``), quoted or not. Only this key is parsed, so the rest of the file
    (paths, download scripts) may use any YAML at all.
    """
    try:
        import yaml  # type: ignore[import-not-found]
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and "names" in data:
            names = data["names"]
            if isinstance(names, dict):
                return _from_mapping([(str(k), str(v)) for k, v in names.items()])
            if isinstance(names, list):
                return [str(n) for n in names]
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = _strip_comment(raw)
        match = re.match(r"^names\s*:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(1).strip()
        if rest.startswith(("[", "{")):
            closing = "]" if rest[0] == "[" else "}"
            j = i
            while closing not in rest and j + 1 < len(lines):
                j += 1
                rest += " " + _strip_comment(lines[j]).strip()
            body = rest[1:rest.rindex(closing)] if closing in rest else rest[1:]
            items = _split_flow(body)
            if closing == "]":
                return [_scalar(x) for x in items]
            return _from_mapping([_key_value(x) for x in items])
        if rest:
            # A Python-style list literal in one string, seen in some exports.
            try:
                value = ast.literal_eval(rest)
                if isinstance(value, (list, tuple)):
                    return [str(v) for v in value]
            except (ValueError, SyntaxError):
                pass
            raise ValueError(f"cannot read names: {rest!r}")
        block: list[str] = []
        for follow in lines[i + 1:]:
            stripped = _strip_comment(follow)
            if not stripped.strip():
                continue
            if not follow[:1].isspace() and not stripped.lstrip().startswith("-"):
                break
            block.append(stripped.strip())
        if all(b.startswith("-") for b in block):
            return [_scalar(b[1:]) for b in block]
        return _from_mapping([_key_value(b) for b in block])
    return None


def find_names(root: Path) -> tuple[list[str] | None, Path | None]:
    """Class names of the YOLO dataset at ``root`` and the file they came from."""
    candidates: list[Path] = [root / n for n in _YAML_NAMES]
    yamls = sorted(p for p in root.glob("*.y*ml") if p.is_file()) if root.is_dir() else []
    if len(yamls) == 1:
        candidates.append(yamls[0])
    for path in candidates:
        if path.is_file():
            try:
                names = parse_names_yaml(path.read_text(encoding="utf-8-sig"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise DatasetError(f"The class names in {path} cannot be read: {exc}") from exc
            if names is not None:
                return names, path
    labels_dir = find_child(root, "labels")
    for folder in (root, labels_dir):
        if folder is None:
            continue
        for path in [folder / "classes.txt", *sorted(folder.glob("*.names"))]:
            if path.is_file():
                return [l.strip() for l in path.read_text(encoding="utf-8-sig").splitlines() if l.strip()], path
    return None, None


def _label_path(image: Path, root: Path) -> Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (last ``images`` folder); else beside."""
    parts = list(image.relative_to(root).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].lower() == "images":
            options = [root.joinpath(*parts[:i], repl, *parts[i + 1:]).with_suffix(".txt")
                       for repl in ("labels", "Labels", "LABELS")]
            return next((p for p in options if p.is_file()), options[0])
    return image.with_suffix(".txt")


def yolo_images(root: Path) -> list[Path]:
    """Images of a YOLO dataset: under any ``images`` folder, else beside their label files."""
    under_images = [p for p in list_images(root, recursive=True)
                    if any(part.lower() == "images" for part in p.relative_to(root).parts[:-1])]
    if under_images:
        return under_images
    return [p for p in list_images(root) if p.with_suffix(".txt").is_file()] or list_images(root)


def read_yolo(path: Path | str) -> RawDataset:
    """Pair images with label files and read the boxes; validation happens in :mod:`.validate`."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    if not root.is_dir():
        raise DatasetError(f"{path} is not a folder.")
    names, names_file = find_names(root)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        parsed = parse_names_yaml(path.read_text(encoding="utf-8-sig"))
        if parsed is not None:
            names, names_file = parsed, path
    issues: list[Issue] = []
    if names is None:
        issues.append(Issue("no-class-names", str(root),
                            "No data.yaml, classes.txt or .names file: class numbers are used as tag names.", "info"))
    entries: list[RawEntry] = []
    for image in yolo_images(root):
        label_file = _label_path(image, root)
        entry = RawEntry(image, [], pixels=False, annotation=label_file if label_file.is_file() else None)
        entries.append(entry)
        if entry.annotation is None:
            continue
        try:
            text = label_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue("bad-annotation", str(label_file), f"The label file cannot be read ({exc}); the image is skipped."))
            entries.pop()
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            try:
                cls_float = float(fields[0])
                values = [float(v) for v in fields[1:]]
                if cls_float != int(cls_float) or len(values) < 4 or (len(values) > 4 and len(values) % 2):
                    raise ValueError
            except ValueError:
                issues.append(Issue("bad-annotation", str(label_file), f"Line {number} is not 'class cx cy w h': {line.strip()[:60]!r}; dropped."))
                continue
            cls = int(cls_float)
            if names is not None:
                if not 0 <= cls < len(names):
                    issues.append(unknown_tag(label_file, f"class {cls}", [f"0..{len(names) - 1}"]))
                    continue
                label = names[cls]
            else:
                label = str(cls)
            if len(values) == 4:
                x1, y1, x2, y2 = (float(v) for v in cxcywh_to_xyxy(values))
            else:  # polygon: x y x y ...
                xs, ys = values[0::2], values[1::2]
                x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
            entry.boxes.append(RawBox(label, x1, y1, x2, y2))
    return RawDataset(root, "yolo", entries, issues, declared_labels=names)


def _yaml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def write_yolo(dataset: Dataset, out_dir: Path | str, link: bool = False) -> Path:
    """Write ``images/``, ``labels/`` and ``data.yaml``; class index = position in labels.

    Background images get an empty label file so that tools which treat a missing file as
    "not labelled yet" still see them as labelled.
    """
    names = NamePicker()
    index = {label: i for i, label in enumerate(dataset.labels)}
    with staged_output(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for sample in dataset.samples:
            name = names.pick(Path(sample.path), image_format(Path(sample.path)))
            place_image(Path(sample.path), tmp / "images" / name, link)
            lines = []
            for box in sample.boxes:
                cx, cy = (box.x1 + box.x2) / 2.0, (box.y1 + box.y2) / 2.0
                lines.append(f"{index[box.label]} {cx:.8f} {cy:.8f} {box.x2 - box.x1:.8f} {box.y2 - box.y1:.8f}\n")
            (tmp / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines), encoding="utf-8")
        yaml_lines = ["# Written by Falconet", "path: .", "train: images", "val: images",
                      f"nc: {len(dataset.labels)}", "names:"]
        yaml_lines += [f"  {i}: {_yaml_string(label)}" for i, label in enumerate(dataset.labels)]
        (tmp / "data.yaml").write_text("\n".join(yaml_lines) + "\n", encoding="utf-8")
    return Path(out_dir)


__all__ = ["read_yolo", "write_yolo", "parse_names_yaml", "find_names"]
