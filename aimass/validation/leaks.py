"""Held-out images that are copies of training images: a leak, which makes test accuracy measure memory.

A pair counts as a near duplicate when two checks agree: their dHashes lie within `near_duplicate_radius` bits
(found with multi-index hashing, aimass/data/near_duplicates.py, so 10,000 x 54,000 pairs are never compared one by
one), and their preprocessed pixels differ by at most `near_duplicate_max_pixel_difference` on average (0..255),
each image's mean brightness taken away first.
The hash alone is too coarse on small images: at radius 0 it pairs 13.7 % of Fashion-MNIST's test images with some
training image, nearly all of them different garments of the same silhouette, while the pixel check leaves one;
a JPEG re-encoding at another size moves the hash by up to 4 bits but the pixels by less than 1.3
(docs/PERFORMANCE.md, bench/near_duplicates.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.config import ValidationConfig
from aimass.data.near_duplicates import nearest_within
from aimass.validation.comparisons import HELD_OUT


@dataclass(frozen=True)
class LeakedPair:
    split: str  # validation or test
    row: int  # the held-out image's row in its split
    image: str  # the held-out image's file (or IDX file#row)
    train_image: str
    hash_distance: int  # bits
    pixel_difference: float  # mean absolute difference of the preprocessed images, 0..255
    exact: bool  # pixel-identical


def image_names(splits_dir: Path, split: str, count: int) -> np.ndarray:
    """Each image's file as ingest recorded it; `split[i]` for splits written without names."""
    path = splits_dir / f"{split}-names.npy"
    return np.load(path) if path.is_file() else np.array([f"{split}[{row}]" for row in range(count)])


def pixel_difference(image: np.ndarray, other: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images (0..255) once each one's mean brightness is taken away: a copy
    made brighter or darker is still a copy."""
    a, b = image.astype(np.float32), other.astype(np.float32)
    return float(np.abs((a - a.mean()) - (b - b.mean())).mean())


def find_leaks(splits_dir: Path, statistics: dict[str, dict[str, np.ndarray]],
               settings: ValidationConfig) -> dict[str, list[LeakedPair]]:
    """Every validation and test image that is a pixel-identical or near duplicate of a training image, with the
    training image it copies (the closest by hash)."""
    train_images = np.load(splits_dir / "train-images.npy", mmap_mode="r")
    train_exact = statistics["train"]["exact_hash"]
    train_names = image_names(splits_dir, "train", len(train_exact))
    exact_index = {value: row for row, value in enumerate(train_exact.tolist())}
    leaks = {}
    for split in HELD_OUT:
        held_out = statistics[split]
        images = np.load(splits_dir / f"{split}-images.npy", mmap_mode="r")
        names = image_names(splits_dir, split, len(held_out["exact_hash"]))
        match, distance = nearest_within(held_out["near_hash"], statistics["train"]["near_hash"],
                                         settings.near_duplicate_radius)
        found = []
        for row, value in enumerate(held_out["exact_hash"].tolist()):
            twin = exact_index.get(value)
            if twin is not None and np.array_equal(images[row], train_images[twin]):
                found.append(LeakedPair(split, row, str(names[row]), str(train_names[twin]), 0, 0.0, True))
                match[row] = -1  # reported as exact, not again as near
        for row in np.flatnonzero(match >= 0):
            difference = pixel_difference(images[row], train_images[match[row]])
            if difference <= settings.near_duplicate_max_pixel_difference:
                found.append(LeakedPair(split, int(row), str(names[row]), str(train_names[match[row]]),
                                        int(distance[row]), round(difference, 3), False))
        leaks[split] = sorted(found, key=lambda pair: (not pair.exact, pair.pixel_difference, pair.image))
    return leaks
