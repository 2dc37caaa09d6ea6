"""The augmentation policy as one batched tensor -> tensor function (kornia), shared by the augment stage and by
on-the-fly augmentation inside training.

Images are (B, C, H, W) floats on the 0..1 scale; everything runs on whatever device the batch is on, whole batches
at a time. Randomness comes from torch's generator, so a fixed seed gives the same output on the same device.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from aimass.data.preprocess import unit_tensor
from aimass.config import AugmentPolicy


class PolicyAugmenter(nn.Module):
    """The policy's transforms in order; output clamped to 0..1 (noise can overshoot)."""

    def __init__(self, policy: AugmentPolicy):
        super().__init__()
        transforms = [
            K.RandomHorizontalFlip(p=policy.horizontal_flip.p),
            K.RandomRotation(degrees=policy.rotation.degrees, p=policy.rotation.p),
            K.RandomAffine(degrees=0.0, scale=(policy.scale.min_factor, policy.scale.max_factor), p=policy.scale.p),
            K.RandomAffine(degrees=0.0, translate=(policy.translate.max_fraction, policy.translate.max_fraction),
                           p=policy.translate.p),
            K.RandomGaussianNoise(mean=0.0, std=policy.gaussian_noise.std, p=policy.gaussian_noise.p),
            K.RandomErasing(scale=(policy.random_erasing.min_area, policy.random_erasing.max_area),
                            ratio=(0.3, 3.3), value=0.0, p=policy.random_erasing.p),
        ]
        # A transform with p=0 is disabled: leave it out rather than pay for sampling its parameters.
        self.transforms = nn.Sequential(*[t for t in transforms if t.p > 0])

    def forward(self, unit_images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        if len(self.transforms) == 0:
            return unit_images
        return self.transforms(unit_images).clamp_(0.0, 1.0)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's RNG (CPU, plus CUDA on a CUDA device) seeded, restoring the caller's RNG state afterwards."""
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def augment_images(images: np.ndarray, policy: AugmentPolicy, seed: int, device: torch.device,
                   batch_size: int = 4096) -> np.ndarray:
    """Augmented copies of uint8 images (N, C, H, W), rounded back to uint8 so they store like the originals."""
    augmenter = PolicyAugmenter(policy).to(device)
    outputs = []
    with seeded(seed, device):
        for start in range(0, len(images), batch_size):
            batch = unit_tensor(images[start:start + batch_size], device)
            outputs.append((augmenter(batch) * 255.0).round_().to(torch.uint8).cpu())
    return torch.cat(outputs).numpy() if outputs else np.array(images)
