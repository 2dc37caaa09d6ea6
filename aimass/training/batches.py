"""Training batches: index tensors into a split become normalised (optionally augmented) input batches on the device.
Batches are slices of one shuffled index per epoch, so the loop has no DataLoader workers to feed."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from aimass.config import AimassConfig
from aimass.data.arrays import ImageSet
from aimass.data.preprocess import InputSpec, normalize

# A split up to this size is copied to the device once, as uint8; a larger one is read from its memory map a batch
# at a time.
RESIDENT_BYTES = 2 * 2**30


def image_rows(images: np.ndarray, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """index tensor -> uint8 batch (B, C, H, W) on `device`."""
    if images.nbytes <= RESIDENT_BYTES:
        resident = torch.from_numpy(np.array(images)).to(device)
        return lambda batch: resident[batch]
    return lambda batch: torch.from_numpy(np.asarray(images[batch.cpu().numpy()])).to(device, non_blocking=True)


def batch_source(config: AimassConfig, train_set: ImageSet, device: torch.device, spec: InputSpec):
    """index tensor -> normalised input batch; applies the augmentation policy per batch when configured."""
    if not config.augment.on_the_fly:
        return plain_batches(train_set, device, spec)
    from aimass.augmentation.policy import PolicyAugmenter  # kornia, imported only by runs that augment

    rows = image_rows(train_set.images, device)
    augmenter = PolicyAugmenter(config.augment.policy).to(device)
    return lambda batch: normalize(augmenter(rows(batch).float().div_(255.0)), spec)


def plain_batches(train_set: ImageSet, device: torch.device, spec: InputSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    rows = image_rows(train_set.images, device)
    return lambda batch: normalize(rows(batch).float().div_(255.0), spec)
