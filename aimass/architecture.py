"""The classifier: a small CNN for 1x28x28 images, and the input normalisation shared by training and inference."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aimass.config import ModelConfig
from aimass.dataset import IMAGE_HEIGHT, NUM_CLASSES

# Fashion-MNIST training-set statistics on the 0..1 scale; part of the model contract, saved in every model card.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530


def build_classifier(config: ModelConfig) -> nn.Sequential:
    """Three conv blocks (the last two halve the resolution), then a two-layer head. ~1.7M parameters by default."""
    c1, c2, c3 = config.channels
    flat_features = c3 * (IMAGE_HEIGHT // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat_features, config.hidden_units), nn.ReLU(), nn.Dropout(config.dropout),
        nn.Linear(config.hidden_units, NUM_CLASSES),
    )


def images_to_unit_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 tensor (N, 1, 28, 28) on the 0..1 scale, on `device`."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return (pixels.float() / 255.0).unsqueeze(1)


def normalize(unit_images: torch.Tensor) -> torch.Tensor:
    """0..1 images -> the zero-centred inputs the classifier expects."""
    return (unit_images - PIXEL_MEAN) / PIXEL_STD


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (N, 28, 28) -> normalised float32 tensor (N, 1, 28, 28) on `device`."""
    return normalize(images_to_unit_tensor(images, device))


@torch.inference_mode()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, 10) for normalised inputs, in evaluation mode, batch by batch to bound memory."""
    model.eval()
    return torch.cat([model(inputs[start:start + batch_size]).float() for start in range(0, len(inputs), batch_size)])
