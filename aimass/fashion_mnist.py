"""Import Fashion-MNIST from its four IDX .gz files into the aimass data set format.

The IDX format (LeCun's MNIST format): a big-endian header `0x00 0x00 <dtype> <ndim>`, one big-endian uint32 per
dimension, then the raw values. Fashion-MNIST images are magic 2051 (uint8, 3 dims), labels 2049 (uint8, 1 dim).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from aimass.atomic import atomic_directory
from aimass.dataset import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, ImageSet, save_image_sets
from aimass.errors import DataImportError
from aimass.integrity import sha256_file

DEFAULT_SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
SOURCE_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FORMAT_VERSION = 1


def read_idx(path: Path, magic: int, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Read one gzipped IDX file, checking its magic number, dimensions and length.

    Raises:
        DataImportError: naming the file and the problem.
    """
    if not path.is_file():
        raise DataImportError(f"{path}: file not found")
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataImportError(f"{path}: not a readable gzip file ({error}); the download may be truncated") from error
    header_bytes = 4 + 4 * len(expected_shape)
    if len(raw) < header_bytes:
        raise DataImportError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    (actual_magic,) = struct.unpack(">I", raw[:4])
    if actual_magic != magic:
        raise DataImportError(f"{path}: wrong magic number {actual_magic}, expected {magic}; is this the right file?")
    shape = struct.unpack(f">{len(expected_shape)}I", raw[4:header_bytes])
    if shape != expected_shape:
        raise DataImportError(f"{path}: shape {shape}, expected {expected_shape}")
    expected_bytes = int(np.prod(expected_shape))
    payload = raw[header_bytes:]
    if len(payload) != expected_bytes:
        raise DataImportError(f"{path}: {len(payload)} bytes of data, expected {expected_bytes} (truncated or padded)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(expected_shape)


def read_split(source_dir: Path, split: str) -> ImageSet:
    images_name, labels_name = SOURCE_FILES[split]
    count = EXPECTED_COUNTS[split]
    images = read_idx(source_dir / images_name, IMAGES_MAGIC, (count, IMAGE_HEIGHT, IMAGE_WIDTH))
    labels = read_idx(source_dir / labels_name, LABELS_MAGIC, (count,))
    if labels.max() >= NUM_CLASSES:
        raise DataImportError(f"{source_dir / labels_name}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    return ImageSet(images, labels)


def import_fashion_mnist(source_dir: Path, target_dir: Path) -> dict:
    """Convert the four IDX files in `source_dir` into `target_dir`, replacing it atomically.

    The output is byte-for-byte deterministic (no timestamps, sorted JSON), so importing the same source twice gives
    the same DVC hash. On any error `target_dir` is left exactly as it was.

    Returns:
        The manifest of the imported data set.
    """
    splits = {split: read_split(source_dir, split) for split in SOURCE_FILES}
    source_sha256 = {name: sha256_file(source_dir / name) for names in SOURCE_FILES.values() for name in names}
    metadata = {"name": "fashion-mnist", "format_version": FORMAT_VERSION, "source_sha256": source_sha256}
    with atomic_directory(target_dir) as staging:
        return save_image_sets(staging, splits, metadata)
