"""Decode a data version once: every image through the shared preprocessing into memory-mapped uint8 arrays, on every
CPU, streamed to disk so memory does not grow with the data set.

The result is cached under `data.cache_dir`, keyed by the data version's DVC md5 and the preprocessing settings:
a second run on the same version and settings reads the cache instead of decoding again. The cache is an ordinary
sha256-manifested directory, verified on every use, and published in one rename (an interrupted decode leaves none).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import statistics as stats
import time
from collections import Counter
from pathlib import Path

import numpy as np

from aimass.atomic import atomic_directory
from aimass.config import DataConfig
from aimass.data.card import DataCard, read_index
from aimass.data.idx import idx_shape, read_idx_split
from aimass.data.arrays import RowWriter, iter_row_chunks
from aimass.data.preprocess import InputSpec, decode_files, imap_in_processes, preprocess_array
from aimass.errors import ArtifactIntegrityError, DataVersionError
from aimass.data.image_processor import CheckpointPreprocessing, apply_preprocessing
from aimass.integrity import read_verified_manifest, write_manifest

log = logging.getLogger(__name__)
DECODED_FORMAT = 2  # 2: each split's image names (<split>-names.npy)
FILES_PER_TASK = 256  # files one decoding task handles


def resolve_input_spec(card: DataCard, data_dir: Path, settings: DataConfig,
                       checkpoint: CheckpointPreprocessing | None = None) -> InputSpec:
    """The model's input size and channels: what a pretrained `checkpoint` fixes, else as configured, else from the
    data when `auto` (grey-scale if every image is; the common size if all share one, else the median shorter side,
    at most `data.max_auto_image_size`)."""
    if card.layout == "idx":  # the header says it all: a cached ingest need not decompress the images
        count, height, width = idx_shape(data_dir / card.idx_files["train"][0])
        sizes, channels = Counter({(width, height): count}), {1}
    else:
        rows = read_index(data_dir)
        sizes, channels = Counter((row["width"], row["height"]) for row in rows), {row["channels"] for row in rows}
    if settings.image_size != "auto":
        height, width = ((settings.image_size, settings.image_size) if isinstance(settings.image_size, int)
                         else settings.image_size)
    elif len(sizes) == 1:
        (width, height), = sizes
    else:
        side = int(min(stats.median(min(size) for size in sizes.elements()), settings.max_auto_image_size))
        height = width = side
    image_channels = (1 if channels == {1} else 3) if settings.channels == "auto" else settings.channels
    spec = InputSpec(channels=image_channels, height=int(height), width=int(width), resize=settings.resize)
    return spec if checkpoint is None else apply_preprocessing(spec, checkpoint)


def decode_data_version(data_dir: Path, data_md5: str, settings: DataConfig, cache_root: Path,
                        checkpoint: CheckpointPreprocessing | None = None) -> Path:
    """The decoded arrays of the data version in `data_dir` (whose DVC md5 is `data_md5`), from the cache or
    decoded now, at the input a pretrained `checkpoint` fixes, if any. Returns the directory: `<split>-images.npy`
    (N, C, H, W), `-labels.npy`, `-sources.npy` (N, 3: original width, height, channels), `-names.npy` (each image's
    file, or IDX file#row) per split of the source,
    and a manifest holding the input spec."""
    card = DataCard.read(data_dir)
    spec = resolve_input_spec(card, data_dir, settings, checkpoint)
    model_channels = checkpoint.channels if checkpoint else spec.channels  # the statistics are repeated to these
    key = hashlib.sha256(json.dumps({"md5": data_md5, "spec": spec.to_dict(), "format": DECODED_FORMAT,
                                     **({"model_channels": model_channels} if model_channels != spec.channels else {})},
                                    sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_root / key
    if (cached / "manifest.json").is_file():
        try:
            read_verified_manifest(cached)
            log.info("decoded images of data version %s from the cache %s", data_md5, cached)
            return cached
        except ArtifactIntegrityError as error:
            log.warning("the decoded cache %s is damaged (%s); decoding again", cached, error)
    started = time.perf_counter()
    with atomic_directory(cached) as staging:
        counts = _decode_idx(card, data_dir, spec, staging) if card.layout == "idx" else \
            _decode_files(data_dir, spec, staging)
        if not spec.mean:  # no checkpoint fixed them: the training split's own
            spec = _with_training_statistics(spec, staging, model_channels)
        write_manifest(staging, {"kind": "aimass-decoded-images", "data_md5": data_md5, "splits": counts,
                                 "input_spec": spec.to_dict(), "format": DECODED_FORMAT})
    total = sum(counts.values())
    seconds = time.perf_counter() - started
    log.info("decoded %d images in %.1f s (%.0f images/s) into %s", total, seconds, total / max(seconds, 1e-9), cached)
    return cached


def decoded_input_spec(decoded_dir: Path) -> InputSpec:
    return InputSpec.from_dict(json.loads((decoded_dir / "manifest.json").read_text())["input_spec"])


def _decode_files(data_dir: Path, spec: InputSpec, target: Path) -> dict[str, int]:
    rows = read_index(data_dir)
    counts = {}
    for split in sorted({row["split"] for row in rows}):
        split_rows = [row for row in rows if row["split"] == split]
        with RowWriter(target / f"{split}-images.npy", np.uint8, (len(split_rows), *spec.shape)) as images:
            _write_files(split_rows, data_dir, spec, images)
        _save_labels_and_sources(target, split, [], [], split_rows, [])
        counts[split] = len(split_rows)
    return counts


def _decode_idx(card: DataCard, data_dir: Path, spec: InputSpec, target: Path) -> dict[str, int]:
    """The IDX files of each split, followed by that split's image files (captured images), if any."""
    rows = read_index(data_dir)
    counts = {}
    for split, names in card.idx_files.items():
        pixels, labels = read_idx_split(*(data_dir / name for name in names))
        split_rows = [row for row in rows if row["split"] == split]
        with RowWriter(target / f"{split}-images.npy", np.uint8, (len(pixels) + len(split_rows), *spec.shape)) \
                as images:
            if spec.shape == (1, *pixels.shape[1:]):
                images.write(pixels[:, np.newaxis])  # already at the model's input: nothing to resample
            else:
                for image in pixels:
                    images.write(preprocess_array(image, spec)[np.newaxis])
            _write_files(split_rows, data_dir, spec, images)
        idx_sources = np.tile(np.array([pixels.shape[2], pixels.shape[1], 1], dtype=np.int32), (len(pixels), 1))
        # An IDX image is named by its file and row, as `aimass` reports it (the leaked pairs of validation).
        idx_names = [f"{names[0]}#{row}" for row in range(len(pixels))]
        _save_labels_and_sources(target, split, labels, idx_sources, split_rows, idx_names)
        counts[split] = len(pixels) + len(split_rows)
    return counts


def _write_files(rows: list[dict], data_dir: Path, spec: InputSpec, images: RowWriter) -> None:
    """Decode the image files of `rows` in worker processes, in order, into `images`."""
    paths = [data_dir / row["file"] for row in rows]
    tasks = [paths[start:start + FILES_PER_TASK] for start in range(0, len(paths), FILES_PER_TASK)]
    try:
        for pixels in imap_in_processes(functools.partial(decode_files, spec=spec), tasks, chunksize=1):
            images.write(pixels)
    except ValueError as error:  # the import checked every file: the workspace was changed since
        raise DataVersionError(f"an image of {data_dir} no longer decodes ({error}); run `aimass data pull` "
                               "or import the data set again") from error


def _save_labels_and_sources(target: Path, split: str, labels, sources, rows: list[dict],
                             idx_names: list[str]) -> None:
    file_labels = np.array([row["label"] for row in rows], dtype=np.int64)
    file_sources = np.array([(row["width"], row["height"], row["channels"]) for row in rows],
                            dtype=np.int32).reshape(-1, 3)
    np.save(target / f"{split}-labels.npy", np.concatenate([np.asarray(labels, dtype=np.int64), file_labels]))
    np.save(target / f"{split}-sources.npy",
            np.concatenate([np.asarray(sources, dtype=np.int32).reshape(-1, 3), file_sources]))
    np.save(target / f"{split}-names.npy", np.array([*idx_names, *(row["file"] for row in rows)], dtype=str))


def _with_training_statistics(spec: InputSpec, decoded_dir: Path, model_channels: int) -> InputSpec:
    """The spec with the per-channel mean and std of the training images (0..1 scale), accumulated in chunks; a
    grey statistic repeated for a model of three channels."""
    total, squares, count = np.zeros(spec.channels), np.zeros(spec.channels), 0
    for chunk in iter_row_chunks(decoded_dir / "train-images.npy"):
        unit = chunk.astype(np.float64) / 255.0
        total += unit.sum(axis=(0, 2, 3))
        squares += np.square(unit).sum(axis=(0, 2, 3))
        count += len(chunk)
    pixels = max(count * spec.height * spec.width, 1)
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean ** 2, 0.0))
    repeat = model_channels // spec.channels
    return dataclasses.replace(spec, mean=tuple(round(float(m), 6) for m in mean) * repeat,
                               std=tuple(round(max(float(s), 1e-3), 6) for s in std) * repeat)
