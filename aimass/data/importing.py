"""`aimass data import`: a team's images, in the layouts they already have, checked and copied into `data/`.

Layouts (`--format auto` picks one):
    imagefolder  SOURCE/<class>/**/<image>, optionally under split folders named as Hugging Face's imagefolder
                 names them (train|training, validation|valid|val|dev, test|testing|eval|evaluation)
    manifest     a CSV or JSONL file with a path column (file_name, path or image), label and optional split
                 (train|validation|test, or Vertex AI's TRAINING|VALIDATION|TEST); paths relative to the manifest
    idx          MNIST-style IDX files (train-images-idx3-ubyte.gz, ...)

Every image is decoded once here, in parallel, so a truncated or mislabelled file is reported now, naming it, rather
than in the middle of training. Any problem stops the import before `data/` is touched (or, with --skip-bad-images,
unreadable files are left out and listed in the data card). The result replaces `data/` in one rename.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aimass.atomic import atomic_directory
from aimass.data import fashion_mnist
from aimass.data.card import IDX_DIR, IMAGES_DIR, INDEX_FILE, DataCard
from aimass.data.idx import find_idx_files, read_idx_split
from aimass.data.preprocess import ImageDecodeError, image_channels, imap_in_processes, open_image
from aimass.errors import DataImportError
from aimass.integrity import sha256_file

FORMATS = ("auto", "imagefolder", "manifest", "idx")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
MANIFEST_PATH_COLUMNS = ("file_name", "path", "image")
MANIFEST_NAMES = ("metadata.csv", "metadata.jsonl")
SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class SourceImage:
    path: Path  # where the file is now
    relative: str  # its path under data/images/
    label: str
    split: str  # train, validation or test


@dataclass(frozen=True)
class ImportSettings:
    min_images_per_class: int = 10
    skip_bad_images: bool = False


def import_dataset(source: Path, data_dir: Path, source_format: str = "auto", name: str | None = None,
                   settings: ImportSettings = ImportSettings()) -> DataCard:
    """Check `source` and replace `data_dir` with its images, index and data card; returns the card.

    Raises:
        DataImportError: naming the files or rows at fault (the first ten and a count) and what to do; `data_dir`
            is then left exactly as it was.
    """
    source = source.resolve() if source.exists() else source
    if not source.exists():
        raise DataImportError(f"{source} does not exist: give --source a folder of class folders, a CSV/JSONL "
                              "manifest or a folder of IDX files")
    chosen = detect_format(source) if source_format == "auto" else source_format
    if chosen == "idx":
        return _import_idx(source, data_dir, name, settings)
    images, ignored = _scan_manifest(_manifest_file(source)) if chosen == "manifest" else _scan_folder(source)
    dataset_name = name or (source.parent.name if source.is_file() else source.name)
    return _import_files(images, ignored, data_dir, dataset_name, chosen, settings)


def detect_format(source: Path) -> str:
    if source.is_file():
        return "manifest"
    if any(source.glob("train-images-idx3-ubyte*")):
        return "idx"
    if any((source / manifest).is_file() for manifest in MANIFEST_NAMES):
        return "manifest"
    return "imagefolder"


# ---- image folders ----

def _scan_folder(root: Path) -> tuple[list[SourceImage], int]:
    """Every image under `root` with its class (and split, from split folders); plus how many files were ignored."""
    if not root.is_dir():
        raise DataImportError(f"{root} is not a folder; --format imagefolder needs SOURCE/<class>/<images>")
    children = sorted(child for child in root.iterdir() if not child.name.startswith("."))
    split_folders = {child: SPLIT_ALIASES[child.name.lower()] for child in children
                     if child.is_dir() and child.name.lower() in SPLIT_ALIASES}
    if split_folders:
        tops, ignored = list(split_folders.items()), sum(1 for child in children if child not in split_folders)
    else:
        tops, ignored = [(root, "train")], 0
    images: list[SourceImage] = []
    empty_splits = []
    for folder, split in tops:
        found = 0
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file() or p.is_symlink()):
                if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
                    ignored += 1
                    continue
                _refuse_escape(root, path, f"{path}")
                images.append(SourceImage(path, path.relative_to(root).as_posix(), class_dir.name, split))
                found += 1
        ignored += sum(1 for p in folder.iterdir() if p.is_file())
        if found == 0:
            empty_splits.append(folder)
    if empty_splits:
        raise DataImportError(f"empty split: {_listing([str(f) for f in empty_splits])} holds no images in class "
                              "folders; add images or remove the folder")
    return images, ignored


# ---- manifests ----

def _manifest_file(source: Path) -> Path:
    if source.is_file():
        return source
    found = [source / name for name in MANIFEST_NAMES if (source / name).is_file()]
    if len(found) != 1:
        raise DataImportError(f"{source}: --format manifest needs one of {', '.join(MANIFEST_NAMES)} there, or give "
                              "the manifest file itself as --source")
    return found[0]


def _scan_manifest(manifest: Path) -> tuple[list[SourceImage], int]:
    rows = _read_manifest_rows(manifest)
    if not rows:
        raise DataImportError(f"{manifest} lists no images")
    path_column = next((column for column in MANIFEST_PATH_COLUMNS if column in rows[0][1]), None)
    if path_column is None or "label" not in rows[0][1]:
        raise DataImportError(f"{manifest} needs a path column ({', '.join(MANIFEST_PATH_COLUMNS)}) and a label "
                              f"column; it has {', '.join(rows[0][1]) or 'none'}")
    root = manifest.parent
    images, problems = [], []
    for number, row in rows:
        where = f"{manifest.name} row {number}"
        relative = str(row.get(path_column) or "").strip()
        label = str(row.get("label") if row.get("label") is not None else "").strip()
        split = SPLIT_ALIASES.get(str(row.get("split") or "train").strip().lower())
        if not relative:
            problems.append(f"{where}: empty {path_column}")
        elif Path(relative).is_absolute():
            problems.append(f"{where}: {relative} is an absolute path; paths must be relative to the manifest")
        elif not label:
            problems.append(f"{where}: {relative} has an empty label")
        elif split is None:
            problems.append(f"{where}: split {row.get('split')!r} is not train, validation or test")
        else:
            path = root / relative
            try:
                _refuse_escape(root, path, f"{where}: {relative}")
            except DataImportError as error:
                problems.append(str(error))
                continue
            if not path.is_file():
                problems.append(f"{where}: {relative} does not exist")
                continue
            images.append(SourceImage(path, Path(relative).as_posix(), label, split))
    if problems:
        raise DataImportError(f"{len(problems)} rows of {manifest} cannot be imported: {_listing(problems)}; fix "
                              "the manifest and import again")
    return images, 0


def _read_manifest_rows(manifest: Path) -> list[tuple[int, dict]]:
    """(row number as a person counts it, row) for a CSV (header = line 1) or JSONL manifest."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataImportError(f"{manifest} is not UTF-8 text ({error})") from None
    if manifest.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataImportError(f"{manifest.name} line {number} is not JSON: {error}") from None
                if not isinstance(row, dict):
                    raise DataImportError(f"{manifest.name} line {number} is not a JSON object")
                rows.append((number, row))
        return rows
    if manifest.suffix.lower() != ".csv":
        raise DataImportError(f"{manifest}: a manifest is a .csv or .jsonl file")
    return [(number, row) for number, row in enumerate(csv.DictReader(text.splitlines()), start=2)]


def _refuse_escape(root: Path, path: Path, where: str) -> None:
    """A path (after `..` and symlinks are resolved) must stay inside `root`: an import never copies other files."""
    if not Path(os.path.normpath(path)).is_relative_to(root):
        raise DataImportError(f"{where} leaves {root} (through '..'); every image must be inside it")
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataImportError(f"{where} is a symlink to {path.resolve()}, outside {root}; copy the file in instead")


# ---- checking and writing image files ----

def inspect_image(path: Path) -> tuple[int, int, int] | str:
    """(width, height, channels) of a file that decodes whole, else why it does not."""
    try:
        image = open_image(path)
    except ImageDecodeError as error:
        return str(error)
    return image.width, image.height, image_channels(image)


def inspect_images(paths: list[Path]) -> list[tuple[int, int, int] | str]:
    """`inspect_image` of each file: a worker process's task (many files, so small images are not outweighed by
    the cost of sending tasks between processes)."""
    return [inspect_image(path) for path in paths]


def _inspect_all(paths: list[Path], per_task: int = 256) -> list[tuple[int, int, int] | str]:
    tasks = [paths[start:start + per_task] for start in range(0, len(paths), per_task)]
    return [outcome for outcomes in imap_in_processes(inspect_images, tasks, chunksize=1) for outcome in outcomes]


def _import_files(images: list[SourceImage], ignored: int, data_dir: Path, name: str, source_format: str,
                  settings: ImportSettings) -> DataCard:
    inspected = _inspect_all([image.path for image in images])
    bad = [(image, outcome) for image, outcome in zip(images, inspected) if isinstance(outcome, str)]
    if bad and not settings.skip_bad_images:
        raise DataImportError(f"{len(bad)} files are not readable images: "
                              f"{_listing([f'{image.path}: {why}' for image, why in bad])}; replace or delete them, "
                              "or import with --skip-bad-images to leave them out")
    good = [(image, outcome) for image, outcome in zip(images, inspected) if not isinstance(outcome, str)]
    class_names = _class_names([image for image, _ in good], settings)
    label_of = {label: index for index, label in enumerate(class_names)}
    splits = Counter(image.split for image, _ in good)
    card = DataCard(name=name, source_format=source_format, class_names=class_names, splits=dict(sorted(splits.items())),
                    ignored_files=ignored, quarantined=tuple(str(image.path) for image, _ in bad))
    with atomic_directory(data_dir) as staging:
        rows = []
        for image, (width, height, channels) in sorted(good, key=lambda item: (item[0].split, item[0].relative)):
            target = staging / IMAGES_DIR / image.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.path, target)
            rows.append({"file": f"{IMAGES_DIR}/{image.relative}", "label": label_of[image.label],
                         "split": image.split, "width": width, "height": height, "channels": channels})
        with open(staging / INDEX_FILE, "w", encoding="utf-8") as index:
            index.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        card.write(staging)
    return card


def _class_names(images: list[SourceImage], settings: ImportSettings) -> tuple[str, ...]:
    """Sorted class names (numerically when every label is a number); refuses too few classes or images."""
    per_class = Counter(image.label for image in images)
    numeric = all(label.isdigit() for label in per_class)
    names = tuple(sorted(per_class, key=lambda label: (int(label), label) if numeric else (0, label)))
    if len(names) < 2:
        raise DataImportError(f"only one class ({', '.join(names) or 'none'}): a classifier needs at least two; "
                              "add a folder (or labels) for another class")
    training_classes = {image.label for image in images if image.split == "train"}
    unseen = sorted(set(names) - training_classes)
    if unseen:
        raise DataImportError(f"classes with no training images: {_listing(unseen)}; add training images for them")
    small = [f"{label} ({per_class[label]})" for label in names if per_class[label] < settings.min_images_per_class]
    if small:
        raise DataImportError(f"{len(small)} classes have fewer than {settings.min_images_per_class} images "
                              f"(data.min_images_per_class): {_listing(small)}; add images or lower the setting")
    return names


# ---- IDX ----

def _import_idx(source: Path, data_dir: Path, name: str | None, settings: ImportSettings) -> DataCard:
    import numpy as np

    files = find_idx_files(source)
    labels = {split: read_idx_split(*paths)[1] for split, paths in files.items()}
    is_demo = fashion_mnist.is_fashion_mnist(sha256_file(files["train"][1]))
    highest = int(max(split_labels.max() for split_labels in labels.values()))
    class_names = fashion_mnist.CLASS_NAMES if is_demo else tuple(str(k) for k in range(highest + 1))
    if highest >= len(class_names):
        raise DataImportError(f"{files['train'][1]}: label {highest} outside 0..{len(class_names) - 1}")
    counts = np.bincount(np.concatenate(list(labels.values())), minlength=len(class_names))
    small = [f"{class_names[k]} ({counts[k]})" for k in range(len(class_names))
             if counts[k] < settings.min_images_per_class]
    if small:
        raise DataImportError(f"{len(small)} classes have fewer than {settings.min_images_per_class} images "
                              f"(data.min_images_per_class): {_listing(small)}")
    card = DataCard(
        name=name or (fashion_mnist.NAME if is_demo else source.name), source_format="idx", class_names=class_names,
        splits={split: len(split_labels) for split, split_labels in sorted(labels.items())},
        idx_files={split: (f"{IDX_DIR}/{images.name}", f"{IDX_DIR}/{labels_file.name}")
                   for split, (images, labels_file) in sorted(files.items())},
        recommended_gate=dict(fashion_mnist.RECOMMENDED_GATE) if is_demo else {})
    with atomic_directory(data_dir) as staging:
        (staging / IDX_DIR).mkdir()
        for images, labels_file in files.values():
            for path in (images, labels_file):
                shutil.copyfile(path, staging / IDX_DIR / path.name)
        card.write(staging)
    return card


def _listing(items: list[str]) -> str:
    """The first ten items, then how many more."""
    shown = "; ".join(items[:SHOWN_PROBLEMS])
    return shown + (f" (and {len(items) - SHOWN_PROBLEMS} more)" if len(items) > SHOWN_PROBLEMS else "")

