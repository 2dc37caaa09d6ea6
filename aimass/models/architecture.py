"""The models aimass trains (the built-in CNN for any input size and number of classes, a Hugging Face checkpoint, a
timm model or a torchvision builder's, each from random weights or a local checkpoint) and the signature every model
carries: its input spec and class names, read from the data set and saved in the model card."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aimass.config import ModelConfig
from aimass.data.card import SplitsCard
from aimass.data.preprocess import InputSpec, to_model_input
from aimass.models.card import ModelCard

# The head sees at most this grid of the last feature map: larger inputs are average-pooled down to it, so the
# parameter count does not grow with the image size.
MAX_HEAD_GRID = 7


@dataclass(frozen=True)
class Signature:
    """What a model takes (uint8 images under `input_spec`) and answers (one of `class_names`)."""

    input_spec: InputSpec
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def of_splits(cls, card: SplitsCard) -> Signature:
        return cls(InputSpec.from_dict(card.input_spec), tuple(card.class_names))

    @classmethod
    def of_model_card(cls, card: ModelCard) -> Signature:
        return cls(card.input_spec, tuple(card.class_names))


class CNNClassifier(nn.Sequential):
    """The built-in CNN: a plain sequence of layers (its state dict keys are their indices)."""

    @property
    def head(self) -> nn.Module:
        """The layers after the feature map is flattened."""
        flatten = next(index for index, layer in enumerate(self) if isinstance(layer, nn.Flatten))
        return self[flatten + 1:]


class LibraryClassifier(nn.Module):
    """A network a library built (timm, torchvision, transformers) behind aimass's model interface: normalised
    pixels in, logits out. Subclasses name its head; the network's own state dict keys stay under `network.`."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @property
    def head(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(pixels)


def build_model(config: ModelConfig, signature: Signature, pretrained: bool = True) -> tuple[nn.Module, dict | None]:
    """A fresh model of the configured architecture for `signature`, and (for a checkpoint) its lineage entry: the
    source and the sha256 of its files. `pretrained=False` ignores any checkpoint's weights (a distillation
    student)."""
    if config.is_built_in:
        return build_classifier(config, signature), None
    if config.library == "timm":
        from aimass.models.timm_models import build_timm

        return build_timm(config, signature.class_names, signature.input_spec.model_shape[0], pretrained)
    if config.library == "torchvision":
        from aimass.models.torchvision_models import build_torchvision

        return build_torchvision(config, signature.class_names, signature.input_spec.model_shape, pretrained)
    from aimass.models.huggingface import from_checkpoint

    return from_checkpoint(config.architecture, signature.class_names, signature.input_spec.model_shape[0],
                           pretrained)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters: they may learn at different rates, and the backbone may be frozen at first."""
    head = {id(parameter) for parameter in model.head.parameters()}
    backbone = [parameter for parameter in model.parameters() if id(parameter) not in head]
    return backbone, [parameter for parameter in model.parameters() if id(parameter) in head]


def build_classifier(config: ModelConfig, signature: Signature) -> CNNClassifier:
    """Three conv blocks (the last two halve the resolution), then a two-layer head. ~1.7M parameters by default."""
    c1, c2, c3 = config.channels
    spec = signature.input_spec
    grid = (max(1, min(spec.height // 4, MAX_HEAD_GRID)), max(1, min(spec.width // 4, MAX_HEAD_GRID)))
    return CNNClassifier(
        nn.Conv2d(spec.model_shape[0], c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(grid),  # the identity when the input is at most 4 * MAX_HEAD_GRID on a side
        nn.Flatten(),
        nn.Linear(c3 * grid[0] * grid[1], config.hidden_units), nn.ReLU(), nn.Dropout(config.dropout),
        nn.Linear(config.hidden_units, signature.num_classes),
    )


def example_input(signature: Signature, batch: int = 2) -> torch.Tensor:
    """A zero batch of the model's input shape, for tracing and export."""
    return torch.zeros(batch, *signature.input_spec.model_shape)


@torch.inference_mode()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, classes) for normalised inputs, in evaluation mode, batch by batch to bound memory."""
    model.eval()
    return torch.cat([model(inputs[start:start + batch_size]).float() for start in range(0, len(inputs), batch_size)])


@torch.inference_mode()
def predict_probabilities(model: nn.Module, images: np.ndarray, spec: InputSpec, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, classes) for uint8 images (N, C, H, W), read and scaled a batch at a time."""
    model.eval()
    batches = [torch.softmax(model(to_model_input(images[start:start + batch_size], spec)).float(), dim=1).numpy()
               for start in range(0, len(images), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)
