"""Classification datasets: folder-per-tag, CSV (``image,tags``) and COCO-style JSON.

Validation happens while reading, because it needs the same pass over the files: every image is
decoded once, so corrupt, truncated or tiny files are found before training starts and are
skipped with a warning instead of crashing a run halfway.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from falconet.core.errors import DatasetError, FalconetError, NotEnoughImagesError
from falconet.core.errors import ImageTooLargeError, ImageTooSmallError
from falconet.core.images import load_image
from falconet.core.labels import NEGATIVE, is_negative
from falconet.core.manifest import MULTICLASS, MULTILABEL
from falconet.data.types import Dataset, Issue, Sample

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}
#: Custom Vision refuses to train a classifier with fewer images than this in a tag.
MIN_IMAGES_PER_TAG = 5
#: Folders that hold unlabelled images by convention; they are not tags.
UNTAGGED_FOLDERS = {"test", "tests", "untagged", "unlabeled", "unlabelled"}
#: Smallest side we train on without a warning (the image is upsampled to the model's size).
SMALL_SIDE = 64
#: Largest/smallest images-per-tag ratio before we warn that the data is imbalanced.
IMBALANCE_RATIO = 5.0


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _canonical_tag(name: str) -> str:
    return NEGATIVE if is_negative(name) else name


def read_classification(
    source: str | Path,
    *,
    task: str | None = None,
    min_images_per_tag: int = MIN_IMAGES_PER_TAG,
) -> Dataset:
    """Read and validate a classification dataset; ``task`` forces multiclass/multilabel."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist.", code="DatasetNotFound")
    issues: list[Issue] = []
    if source.is_dir():
        entries, fmt = _read_folders(source, issues), "folders"
    elif source.suffix.lower() == ".csv":
        entries, fmt = _read_csv(source), "csv"
    elif source.suffix.lower() == ".json":
        entries, fmt = _read_coco(source), "coco"
    else:
        raise DatasetError(
            f"{source} is neither a folder of tag folders, a CSV (image,tags) nor a COCO JSON file.",
            code="UnknownDatasetFormat",
        )
    samples = _validate_images(entries, issues)
    if not samples:
        raise DatasetError(f"No usable images were found in {source}.", code="BadRequestNoImages")
    task = _decide_task(samples, task)
    if task == MULTICLASS:
        for sample in samples:
            if not sample.labels:
                sample.labels = [NEGATIVE]
    labels = sorted({label for s in samples for label in s.labels if label != NEGATIVE})
    if not labels:
        raise DatasetError("The dataset has no tags besides Negative.", code="BadRequestNoTags")
    if task == MULTICLASS and any(s.labels == [NEGATIVE] for s in samples):
        labels.append(NEGATIVE)  # Negative is an output class of a multiclass model, last
    dataset = Dataset(task=task, labels=labels, samples=samples, source=str(source), format=fmt, issues=issues)
    _check_counts(dataset, min_images_per_tag)
    return dataset


def _read_folders(root: Path, issues: list[Issue]) -> list[tuple[Path, list[str]]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(
            f"{root} has no sub-folders. Put each tag's photos in a folder named after the tag.",
            code="UnknownDatasetFormat",
        )
    entries: list[tuple[Path, list[str]]] = []
    for folder in folders:
        if folder.name.lower() in UNTAGGED_FOLDERS:
            issues.append(Issue("untagged-folder", str(folder), f"'{folder.name}' is taken as untagged images, not a tag; they are not used for training.", "info"))
            continue
        files = sorted(p for p in folder.rglob("*") if _is_image_file(p))
        direct = [p for p in folder.iterdir() if _is_image_file(p)]
        if not direct and any(p.is_dir() for p in folder.iterdir()):
            raise DatasetError(
                f"{folder} holds folders but no images of its own: {root} looks like a folder of splits. "
                f"Pass the training folder and give the validation folder with --val.",
                code="UnknownDatasetFormat",
            )
        tag = _canonical_tag(folder.name)
        entries.extend((path, [] if tag == NEGATIVE else [tag]) for path in files)
    stray = [p for p in root.iterdir() if _is_image_file(p)]
    if stray:
        issues.append(Issue("untagged-images", str(root), f"{len(stray)} images directly in {root} carry no tag and are not used.", "info"))
    return entries


def _split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.replace(",", ";").split(";") if t.strip()]


def _read_csv(path: Path) -> list[tuple[Path, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "image" not in reader.fieldnames or "tags" not in reader.fieldnames:
            raise DatasetError(f"{path} must have the header 'image,tags'.", code="UnknownDatasetFormat")
        rows = list(reader)
    entries = []
    for row in rows:
        tags = [_canonical_tag(t) for t in _split_tags(row["tags"] or "")]
        entries.append((path.parent / row["image"], _without_negative(tags, row["image"])))
    return entries


def _without_negative(tags: list[str], where: str) -> list[str]:
    if NEGATIVE in tags and len(tags) > 1:
        raise DatasetError(
            f"{where}: a Negative tag and a regular tag cannot be on the same image.",
            code="ErrorNegativeAndRegularTagOnSameImage",
        )
    return [t for t in tags if t != NEGATIVE]


def _read_coco(path: Path) -> list[tuple[Path, list[str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {c["id"]: _canonical_tag(c["name"]) for c in data["categories"]}
        tags: dict[int, set[str]] = {img["id"]: set() for img in data["images"]}
        for ann in data.get("annotations", []):
            tags[ann["image_id"]].add(categories[ann["category_id"]])
        images = data["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a COCO-style JSON (images, categories, annotations): {exc}", code="UnknownDatasetFormat") from exc
    base = path.parent
    entries = []
    for img in images:
        file = base / img["file_name"]
        if not file.exists() and (base / "images" / img["file_name"]).exists():
            file = base / "images" / img["file_name"]
        entries.append((file, _without_negative(sorted(tags[img["id"]]), img["file_name"])))
    return entries


def _validate_images(entries: list[tuple[Path, list[str]]], issues: list[Issue]) -> list[Sample]:
    samples: list[Sample] = []
    seen: dict[str, Sample] = {}
    for path, tags in entries:
        try:
            data = path.read_bytes()
            image = load_image(data)
        except OSError as exc:
            issues.append(Issue("unreadable", str(path), f"cannot be read ({exc.strerror}); skipped"))
            continue
        except FalconetError as exc:
            kind = {ImageTooLargeError: "too-large", ImageTooSmallError: "too-small"}.get(type(exc), "corrupt")
            issues.append(Issue(kind, str(path), f"{exc.message} Skipped."))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            first = seen[digest]
            note = "" if first.labels == tags else f" (its tags {tags} differ from the first copy's {first.labels}; the first copy's are kept)"
            issues.append(Issue("duplicate", str(path), f"is an exact duplicate of {first.path}; skipped{note}."))
            continue
        if min(image.size) < SMALL_SIDE:
            issues.append(Issue("small", str(path), f"is only {image.width}x{image.height}; it is upsampled for training."))
        sample = Sample(path=path, labels=list(tags), width=image.width, height=image.height, sha256=digest)
        seen[digest] = sample
        samples.append(sample)
    return samples


def _decide_task(samples: list[Sample], forced: str | None) -> str:
    if forced in ("multiclass", MULTICLASS):
        multi = [s.path for s in samples if len(s.labels) > 1]
        if multi:
            raise DatasetError(f"--task multiclass, but {len(multi)} images carry several tags (e.g. {multi[0]}).", code="BadRequestInvalidDataset")
        return MULTICLASS
    if forced in ("multilabel", MULTILABEL):
        return MULTILABEL
    if forced is not None:
        raise DatasetError(f"Unknown classification task {forced!r}; use multiclass or multilabel.", code="BadRequestInvalidDataset")
    return MULTILABEL if any(len(s.labels) > 1 for s in samples) else MULTICLASS


def _check_counts(dataset: Dataset, minimum: int) -> None:
    counts = dataset.counts()
    too_few = {tag: n for tag, n in counts.items() if n < minimum}
    if too_few:
        listing = ", ".join(f"{tag} ({n})" for tag, n in sorted(too_few.items()))
        raise NotEnoughImagesError(f"Each tag needs at least {minimum} images; too few in: {listing}.")
    regular = [n for tag, n in counts.items() if tag != NEGATIVE]
    if regular and max(regular) >= IMBALANCE_RATIO * min(regular):
        big = max(counts, key=counts.get)  # type: ignore[arg-type]
        small = min(counts, key=counts.get)  # type: ignore[arg-type]
        dataset.issues.append(Issue(
            "imbalance", dataset.source,
            f"tags are imbalanced: {big} has {counts[big]} images, {small} only {counts[small]}. Add images to the small tags."))

