"""Decoded image arrays: one pair of .npy files per split plus a sha256 manifest.

Used for the decoded cache of a data version and for the Dataset artifacts the pipeline passes between stages
(`train`, `validation`, `test`). Images are uint8 (N, C, H, W) after the shared preprocessing. A few large files
rather than one file per image keep object storage fast; `.npy` loads with `allow_pickle=False`, so a data file can
never execute code, and it loads memory-mapped, so a stage reads the rows it touches instead of the whole split.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.integrity import read_verified_manifest, write_manifest

# Rows copied at a time when a split is written from another array: bounds memory whatever the data set's size.
COPY_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class ImageSet:
    """Images with their labels; row i of `images` has label `labels[i]`."""

    images: np.ndarray  # (N, C, H, W) uint8, often a read-only memory map
    labels: np.ndarray  # (N,) class indices into the data card's class_names

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> ImageSet:
        """The rows at `indices`, read into memory (for samples; `write_rows` copies large selections)."""
        return ImageSet(np.asarray(self.images[indices]), self.labels[indices])


class RowWriter:
    """Writes a .npy file of a known shape a chunk of rows at a time, with plain file writes: no memory map, so the
    writer's resident memory is one chunk whatever the file's size (a written map would stay resident)."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape, self.written = path, np.dtype(dtype), shape, 0
        self.stream = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.stream, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})

    def write(self, rows: np.ndarray) -> None:
        self.stream.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.written += len(rows)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stream.close()
        if exc_info[0] is None and self.written != self.shape[0]:
            raise ValueError(f"{self.path}: {self.written} rows written, {self.shape[0]} declared")


def iter_row_chunks(path: Path, chunk_rows: int = COPY_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """The rows of a .npy file, a chunk at a time, read with plain file reads (nothing stays mapped)."""
    header = np.load(path, mmap_mode="r")
    shape, dtype, offset = header.shape, header.dtype, header.offset
    del header
    row_values = int(np.prod(shape[1:], dtype=np.int64))
    with open(path, "rb") as stream:
        stream.seek(offset)
        for start in range(0, shape[0], chunk_rows):
            count = min(chunk_rows, shape[0] - start)
            yield np.fromfile(stream, dtype=dtype, count=count * row_values).reshape(count, *shape[1:])


def distribute_rows(source: Path, targets: Mapping[Path, np.ndarray]) -> None:
    """Write each target .npy file with the rows of `source` at its (sorted) indices, in one pass over `source`."""
    header = np.load(source, mmap_mode="r")
    dtype, row_shape = header.dtype, header.shape[1:]
    del header
    writers = {path: RowWriter(path, dtype, (len(rows), *row_shape)) for path, rows in targets.items()}
    try:
        start = 0
        for chunk in iter_row_chunks(source):
            stop = start + len(chunk)
            for path, rows in targets.items():
                inside = rows[np.searchsorted(rows, start):np.searchsorted(rows, stop)]
                writers[path].write(chunk[inside - start])
            start = stop
    finally:
        for writer in writers.values():
            writer.__exit__(None, None, None)


def write_rows(path: Path, source: np.ndarray, indices: np.ndarray | None = None) -> None:
    """Write `source[indices]` (all rows when None) as a .npy file, a chunk of rows at a time."""
    rows = len(source) if indices is None else len(indices)
    target = np.lib.format.open_memmap(path, mode="w+", dtype=source.dtype, shape=(rows, *source.shape[1:]))
    for start in range(0, rows, COPY_CHUNK_ROWS):
        stop = min(start + COPY_CHUNK_ROWS, rows)
        target[start:stop] = source[start:stop] if indices is None else source[indices[start:stop]]
    target.flush()
    del target


def save_image_sets(directory: Path, image_sets: Mapping[str, ImageSet], metadata: dict) -> dict:
    """Write each set as `<name>-images.npy` / `<name>-labels.npy` and a manifest with counts and sha256s.

    Returns:
        The manifest written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, image_set in image_sets.items():
        write_rows(directory / f"{name}-images.npy", image_set.images)
        np.save(directory / f"{name}-labels.npy", np.ascontiguousarray(image_set.labels), allow_pickle=False)
    counts = {name: len(image_set) for name, image_set in image_sets.items()}
    return write_manifest(directory, {**metadata, "splits": counts})


def load_image_sets(directory: Path) -> tuple[dict[str, ImageSet], dict]:
    """Every split listed in the manifest of `directory`, memory-mapped, after verifying each file's sha256.

    Raises:
        ArtifactIntegrityError: a file is missing or was modified after it was written.
    """
    manifest = read_verified_manifest(directory)
    image_sets = {
        name: ImageSet(
            images=np.load(directory / f"{name}-images.npy", mmap_mode="r", allow_pickle=False),
            labels=np.load(directory / f"{name}-labels.npy", allow_pickle=False),
        )
        for name in manifest["splits"]
    }
    return image_sets, manifest
