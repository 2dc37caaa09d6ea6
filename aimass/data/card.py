"""The data card: the one description of an imported data set (its name, classes, splits and where the original
files are), written by `aimass data import` as `data/dataset.json` and read by every stage after it.

Layout of the imported, DVC-tracked folder `data/`:
    dataset.json   this card
    index.jsonl    one line per image (layouts of image files): file, label index, split, original size and channels
    images/...     the original image files, under their paths relative to the source, bytes unchanged
    idx/...        the original IDX files (the idx layout)
    images/captured/<class>/...  images the served model was asked and users labelled, added by
                   `aimass monitor --retrain` on top of either layout (listed in index.jsonl)
Keeping the original files (not a converted blob) lets `dvc diff` between two data versions name the images that
changed.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aimass.errors import DataVersionError

CARD_FILE = "dataset.json"
INDEX_FILE = "index.jsonl"
IMAGES_DIR = "images"
IDX_DIR = "idx"
SPLITS = ("train", "validation", "test")
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DataCard:
    name: str
    source_format: str  # imagefolder | manifest | idx
    class_names: tuple[str, ...]  # label i is class_names[i]; sorted folder names, or as the source orders them
    splits: dict[str, int]  # images per split the source itself defines (missing ones are drawn from train)
    ignored_files: int = 0  # files in the source that are not images of a known extension
    quarantined: tuple[str, ...] = ()  # unreadable files left out with --skip-bad-images
    idx_files: dict[str, tuple[str, str]] = field(default_factory=dict)  # split -> (images, labels) under idx/
    recommended_gate: dict[str, float] = field(default_factory=dict)  # thresholds the data set's publisher sets
    captured_images: dict[str, int] = field(default_factory=dict)  # split -> labelled production images added
    format_version: int = FORMAT_VERSION

    @property
    def layout(self) -> str:
        return "idx" if self.idx_files else "files"

    @property
    def images(self) -> int:
        return sum(self.splits.values())

    def write(self, data_dir: Path) -> None:
        values = {**asdict(self), "class_names": list(self.class_names), "quarantined": list(self.quarantined)}
        if not self.captured_images:  # an import writes the card it always wrote: its DVC hash stays the same
            del values["captured_images"]
        (data_dir / CARD_FILE).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, data_dir: Path) -> DataCard:
        """Raises DataVersionError when `data_dir` holds no data set imported by this version of aimass."""
        path = data_dir / CARD_FILE
        if not path.is_file():
            raise DataVersionError(f"{data_dir} holds no imported data set ({CARD_FILE} is missing): run "
                                   "`aimass data import --source PATH`")
        values = json.loads(path.read_text())
        if values.get("format_version") != FORMAT_VERSION:
            raise DataVersionError(f"{path} was written by another version of aimass (format "
                                   f"{values.get('format_version')}, expected {FORMAT_VERSION}): import the data "
                                   "set again with `aimass data import`")
        values["class_names"] = tuple(values["class_names"])
        values["quarantined"] = tuple(values["quarantined"])
        values["idx_files"] = {split: tuple(files) for split, files in values["idx_files"].items()}
        return cls(**values)


def read_index(data_dir: Path) -> list[dict]:
    """The rows of index.jsonl, in file order (sorted by split, then file); none for an IDX data set without
    captured images."""
    if not (data_dir / INDEX_FILE).is_file():
        return []
    with open(data_dir / INDEX_FILE, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def model_name_for(dataset_name: str) -> str:
    """A registry-safe model name from a data set's name: lower case, letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()).strip("-")[:63].rstrip("-")
    return slug or "images"


@dataclass(frozen=True)
class SplitsCard:
    """How the pipeline sees a data version after ingest (`dataset.json` in the splits artifact): the data card's
    name and classes, the resolved input spec, the split sizes and how missing splits were drawn."""

    name: str
    class_names: tuple[str, ...]
    input_spec: dict  # InputSpec.to_dict()
    data_md5: str
    counts: dict[str, int]
    drawn: dict[str, str]  # split -> how it was made when the source had none, e.g. "10% of train, seed 0"
    recommended_gate: dict[str, float]
    quarantined: int
    ignored_files: int

    def write(self, directory: Path) -> None:
        values = {**asdict(self), "class_names": list(self.class_names)}
        (directory / CARD_FILE).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: Path) -> SplitsCard:
        values = json.loads((directory / CARD_FILE).read_text())
        return cls(**{**values, "class_names": tuple(values["class_names"])})
