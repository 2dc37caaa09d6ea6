"""How a model holds up beyond clean test images: accuracy under common corruptions, and how well its confidence
matches its accuracy.

Corruptions (after Hendrycks and Dietterich's ImageNet-C, at the severities `evaluate.severities` names, 1 mildest
to 5 harshest): Gaussian noise, Gaussian blur, brightness, contrast and JPEG re-encoding. Each is applied to the
uint8 images as the server would receive them, on the model's device, a whole batch at a time with kornia (the
augmentation library training already uses), and the result goes through the model's own preprocessing, so a
corruption is what a camera or an upload would do, not a change of the normalisation. A corruption's figure is the
accuracy on the corrupted images; `corruption_accuracy` is their mean over every corruption and severity.

Calibration: the expected calibration error (Guo et al., 2017), the gap between confidence and accuracy averaged
over `evaluate.calibration_bins` equal-width confidence bins, weighted by the share of images in each.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from aimass.config import EvaluateConfig
from aimass.data.preprocess import InputSpec

CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg")
SEVERITIES = (1, 2, 3, 4, 5)
# Per severity 1..5, for images on a 0..1 scale. Blur sigmas are for a 28-pixel image and grow with its size.
_NOISE_STD = (0.04, 0.08, 0.12, 0.18, 0.26)
_BLUR_SIGMA = (0.4, 0.6, 0.8, 1.1, 1.5)
_BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST_FACTOR = (0.75, 0.6, 0.45, 0.3, 0.2)
_JPEG_QUALITY = (80, 65, 50, 35, 20)


def corrupt(images: torch.Tensor, corruption: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """`images` (N, C, H, W) uint8 with `corruption` at `severity` applied, uint8 again."""
    unit = images.float() / 255.0
    level = severity - 1
    if corruption == "gaussian_noise":
        noise = torch.randn(unit.shape, generator=generator, device="cpu").to(unit.device)
        unit = unit + _NOISE_STD[level] * noise
    elif corruption == "gaussian_blur":
        from kornia.filters import gaussian_blur2d

        sigma = _BLUR_SIGMA[level] * max(unit.shape[-2:]) / 28
        kernel = 2 * int(np.ceil(3 * sigma)) + 1
        unit = gaussian_blur2d(unit, (kernel, kernel), (sigma, sigma))
    elif corruption == "brightness":
        unit = unit + _BRIGHTNESS_SHIFT[level]
    elif corruption == "contrast":
        mean = unit.mean(dim=(1, 2, 3), keepdim=True)
        unit = (unit - mean) * _CONTRAST_FACTOR[level] + mean
    elif corruption == "jpeg":
        unit = _jpeg(unit, _JPEG_QUALITY[level])
    else:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    return (unit.clamp(0, 1) * 255).round().to(torch.uint8)


def _jpeg(unit: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG compression at `quality`, as kornia models the codec (colour images; grey ones pass as three equal
    channels and come back as their mean)."""
    from kornia.enhance import jpeg_codec_differentiable

    channels = unit.shape[1]
    colour = unit.expand(-1, 3, -1, -1) if channels == 1 else unit
    encoded = jpeg_codec_differentiable(colour, torch.tensor([float(quality)], device=unit.device))
    return encoded.mean(dim=1, keepdim=True) if channels == 1 else encoded


def corruption_accuracies(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray,
                          corruptions: tuple[str, ...], severities: tuple[int, ...], batch_size: int = 512,
                          seed: int = 0) -> dict[str, dict[int, float]]:
    """Accuracy of `predict` (uint8 images -> class probabilities) on `images` under each corruption and severity.
    The noise is drawn from a generator seeded with `seed`, so every model meets the same corrupted images."""
    results: dict[str, dict[int, float]] = {}
    for corruption in corruptions:
        results[corruption] = {}
        for severity in severities:
            generator = torch.Generator().manual_seed(seed)
            correct = 0
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
                corrupted = corrupt(batch, corruption, severity, generator).numpy()
                correct += int((predict(corrupted).argmax(axis=1) == labels[start:start + batch_size]).sum())
            results[corruption][severity] = correct / max(len(images), 1)
    return results


def mean_accuracy(accuracies: dict[str, dict[int, float]]) -> float:
    values = [value for by_severity in accuracies.values() for value in by_severity.values()]
    return float(np.mean(values)) if values else float("nan")


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE: sum over equal-width confidence bins of (share of images) x |accuracy - confidence|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for bin_index in range(bins):
        members = which == bin_index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def evenly_spaced(count: int, available: int) -> np.ndarray:
    """Up to `count` row indices spread over `available` rows (every class of a sorted split is represented)."""
    return np.unique(np.linspace(0, available - 1, num=min(count, available)).astype(int))


@dataclass(frozen=True)
class Robustness:
    corruptions: dict[str, dict[int, float]]  # corruption -> severity -> accuracy
    corruption_accuracy: float  # their mean; NaN when no corruption is measured
    calibration_error: float  # expected calibration error on every image given


def measure_robustness(module: torch.nn.Module, spec: InputSpec, images: np.ndarray, labels: np.ndarray,
                       settings: EvaluateConfig, probabilities: np.ndarray | None = None) -> Robustness:
    """Corruption accuracies on `settings.robustness_images` of `images` and the calibration error on all of them
    (from `probabilities` when the caller already has the model's outputs on `images`)."""
    from aimass.models.architecture import predict_probabilities

    def predict(batch: np.ndarray) -> np.ndarray:
        return predict_probabilities(module, batch, spec)

    rows = evenly_spaced(settings.robustness_images, len(images))
    accuracies = corruption_accuracies(predict, np.asarray(images[rows]), np.asarray(labels)[rows],
                                       settings.corruptions, settings.severities)
    if probabilities is None:
        probabilities = predict(np.asarray(images))
    return Robustness(accuracies, mean_accuracy(accuracies),
                      expected_calibration_error(probabilities, np.asarray(labels), settings.calibration_bins))
