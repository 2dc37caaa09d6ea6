"""The augment stage's work: apply the augmentation policy to the train split, in whole batches (on the GPU when
there is one).

The output training set is the original train split followed by `augment.expansion` augmented copies of it
(0 = no copies: the stage then only records the policy and its preview, and train can apply the policy on the fly).
With no copies and no on-the-fly augmentation the policy is not used at all: the stage says so instead of previewing
it, and does not import torch (about 2 s of a process's start-up).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aimass.config import AimassConfig, AugmentConfig, AugmentPolicy
from aimass.data.arrays import ImageSet, load_image_sets, save_image_sets
from aimass.reports import html_page

if TYPE_CHECKING:
    import torch

PREVIEW_IMAGES = 8


@dataclass(frozen=True)
class AugmentResult:
    original_images: int
    added_images: int
    images_per_second: float  # augmentation throughput, 0 when nothing was augmented
    device: str


def expand_training_set(train: ImageSet, policy: AugmentPolicy, expansion: int, seed: int,
                        device: "torch.device", batch_size: int) -> tuple[ImageSet, float]:
    """The train split plus `expansion` augmented copies (copy k seeded with seed + k); returns it and images/s."""
    from aimass.augmentation.policy import augment_images

    copies, seconds = [], 0.0
    for copy_index in range(expansion):
        started = time.perf_counter()
        copies.append(augment_images(train.images, policy, seed + copy_index, device, batch_size))
        seconds += time.perf_counter() - started
    expanded = ImageSet(np.concatenate([train.images, *copies]), np.concatenate([train.labels] * (expansion + 1)))
    return expanded, (expansion * len(train) / seconds if seconds else 0.0)


def preview_html(originals: np.ndarray, augmented: np.ndarray) -> str:
    """Originals (top row) above an augmented version of each (bottom row), as an HTML page."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(len(originals) * 1.1, 2.6))
    axes = figure.subplots(2, len(originals))
    for column in range(len(originals)):
        for row, image in enumerate((originals[column], augmented[column])):
            axes[row][column].imshow(image.transpose(1, 2, 0).squeeze(2) if image.shape[0] == 1
                                     else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            axes[row][column].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("augmented", fontsize=8, loc="left")
    return html_page("Augmentation preview", figure, "Top: training images. Bottom: the same images after the policy.")


def augment(config: AimassConfig, splits_dir: Path, output_dir: Path) -> tuple[AugmentResult, str]:
    """Write the (expanded) training set to `output_dir`; returns the result and the preview page."""
    settings = config.augment
    splits, manifest = load_image_sets(splits_dir)
    train = splits["train"]
    metadata = {"data_md5": manifest["data_md5"], "augment": settings.model_dump(mode="json")}
    if not settings.expansion and not settings.on_the_fly:
        save_image_sets(output_dir, {}, metadata)  # train reads the ingest output's train split
        return AugmentResult(len(train), 0, 0.0, "none"), policy_unused_html(settings)
    import torch

    from aimass.augmentation.policy import augment_images

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.expansion:
        expanded, images_per_second = expand_training_set(
            train, settings.policy, settings.expansion, settings.seed, device, settings.batch_size)
        save_image_sets(output_dir, {"train": expanded}, metadata)
    else:  # nothing added: train reads the ingest output's train split rather than a copy of it
        expanded, images_per_second = train, 0.0
        save_image_sets(output_dir, {}, metadata)
    sample = np.asarray(train.images[:PREVIEW_IMAGES])
    preview = preview_html(sample, augment_images(sample, settings.policy, settings.seed, device))
    result = AugmentResult(len(train), len(expanded) - len(train), images_per_second, str(device))
    return result, preview


def policy_unused_html(settings: AugmentConfig) -> str:
    """The stage's page when training sees no augmented image."""
    return html_page("Augmentation off", None,
                     f"augment.expansion={settings.expansion} and augment.on_the_fly=false: this run trains on the "
                     "train split as ingest wrote it, and the augmentation policy is not applied. Set "
                     "augment.on_the_fly=true (or augment.expansion above 0) to use it.")
