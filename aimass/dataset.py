"""The on-disk format of image data sets inside aimass: one pair of .npy files per split plus a manifest.

Used for the imported data under `data/` (splits `train`, `test`) and for the Dataset artifacts the pipeline passes
between stages (`train`, `validation`, `test`). A few large files rather than one file per image keep DVC and object
storage fast, and `.npy` loads with `allow_pickle=False`, so a data file can never execute code.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.integrity import read_verified_manifest, write_manifest

IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # Fashion-MNIST's label order


@dataclass(frozen=True)
class ImageSet:
    """Images with their labels; row i of `images` has label `labels[i]`."""

    images: np.ndarray  # (N, 28, 28) uint8 for well-formed data; validation decides what else is acceptable
    labels: np.ndarray  # (N,)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])


def save_image_sets(directory: Path, image_sets: Mapping[str, ImageSet], metadata: dict) -> dict:
    """Write each set as `<name>-images.npy` / `<name>-labels.npy` and a manifest with counts and sha256s.

    Returns:
        The manifest written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, image_set in image_sets.items():
        np.save(directory / f"{name}-images.npy", np.ascontiguousarray(image_set.images), allow_pickle=False)
        np.save(directory / f"{name}-labels.npy", np.ascontiguousarray(image_set.labels), allow_pickle=False)
    counts = {name: len(image_set) for name, image_set in image_sets.items()}
    return write_manifest(directory, {**metadata, "splits": counts})


def load_image_sets(directory: Path) -> tuple[dict[str, ImageSet], dict]:
    """Read every split listed in the manifest of `directory`, after verifying the sha256 of each file.

    Raises:
        ArtifactIntegrityError: a file is missing or was modified after it was written.
    """
    manifest = read_verified_manifest(directory)
    image_sets = {
        name: ImageSet(
            images=np.load(directory / f"{name}-images.npy", allow_pickle=False),
            labels=np.load(directory / f"{name}-labels.npy", allow_pickle=False),
        )
        for name in manifest["splits"]
    }
    return image_sets, manifest
