"""IDX files (LeCun's MNIST format, also Fashion-MNIST's): a big-endian header `0x00 0x00 <dtype> <ndim>`, one
big-endian uint32 per dimension, then the raw values. Images are magic 2051 (uint8, N x rows x columns), labels
2049 (uint8, N). Files may be gzipped (`.gz`) or plain.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from aimass.errors import DataImportError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# The usual names: train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], ...
SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: Path, magic: int, dimensions: int) -> np.ndarray:
    """Read one IDX file, checking its magic number and that its length matches its header.

    Raises:
        DataImportError: naming the file and the problem.
    """
    if not path.is_file():
        raise DataImportError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                raw = stream.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataImportError(f"{path}: not a readable gzip file ({error}); the download may be truncated") from error
    header_bytes = 4 + 4 * dimensions
    if len(raw) < header_bytes:
        raise DataImportError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    (actual_magic,) = struct.unpack(">I", raw[:4])
    if actual_magic != magic:
        raise DataImportError(f"{path}: wrong magic number {actual_magic}, expected {magic}; is this the right file?")
    shape = struct.unpack(f">{dimensions}I", raw[4:header_bytes])
    expected_bytes = int(np.prod(shape))
    payload = raw[header_bytes:]
    if len(payload) != expected_bytes:
        raise DataImportError(f"{path}: {len(payload)} bytes of data, expected {expected_bytes} for shape {shape} "
                              "(truncated or padded)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def find_idx_files(source_dir: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (images file, labels file) for the splits whose two files are in `source_dir`.

    Raises:
        DataImportError: a split has one of its two files but not the other, or no train split is there.
    """
    found: dict[str, tuple[Path, Path]] = {}
    for split, prefixes in SPLIT_PREFIXES.items():
        for prefix in prefixes:
            images = _first_existing(source_dir, f"{prefix}-images-idx3-ubyte")
            labels = _first_existing(source_dir, f"{prefix}-labels-idx1-ubyte")
            if images and labels:
                found[split] = (images, labels)
            elif images or labels:
                missing = f"{prefix}-{'labels-idx1' if images else 'images-idx3'}-ubyte.gz"
                raise DataImportError(f"{source_dir / missing}: file not found (its pair "
                                      f"{(images or labels).name} is there)")
    if "train" not in found:
        raise DataImportError(f"{source_dir}: no train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz]")
    return found


def idx_shape(path: Path) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares, read without decompressing the rest of the file."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
        header = stream.read(4)
        dimensions = header[3]
        return struct.unpack(f">{dimensions}I", stream.read(4 * dimensions))


def read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W), labels (N,)) of one split, checked against each other."""
    images = read_idx(images_path, IMAGES_MAGIC, 3)
    labels = read_idx(labels_path, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise DataImportError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    return images, labels


def _first_existing(folder: Path, stem: str) -> Path | None:
    return next((folder / name for name in (f"{stem}.gz", stem) if (folder / name).is_file()), None)
