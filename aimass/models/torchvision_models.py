"""torchvision's classification builders as aimass models: `model.architecture=torchvision:NAME`, from random weights
or from a local safetensors state dict (`model.checkpoint`). Nothing is downloaded: torchvision's weights enums are
read for their preprocessing only (aimass/models/checkpoint.py).

Every torchvision classifier ends in one layer that maps features to classes (resnet's `fc`, mobilenet's
`classifier.3`, squeezenet's `classifier.1` convolution): the last Linear or Conv2d it registers. A checkpoint is
loaded strictly into the builder's network at the checkpoint's own number of classes; that layer is then replaced
for the data set's classes unless the checkpoint records exactly them. A model aimass trains is saved as a state
dict whose safetensors metadata records its classes and preprocessing, so it is a checkpoint for the next run.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aimass.config import ModelConfig
from aimass.data.image_processor import CheckpointPreprocessing
from aimass.data.preprocess import InputSpec
from aimass.errors import ConfigError
from aimass.models.architecture import LibraryClassifier
from aimass.integrity import sha256_file
from aimass.models.checkpoint import (CLASS_NAMES_METADATA, PREPROCESSING_METADATA, WEIGHTS_FILE,
                                      torchvision_checkpoint_file, torchvision_metadata)

log = logging.getLogger(__name__)


class TorchvisionClassifier(LibraryClassifier):
    @property
    def head(self) -> nn.Module:
        return self.network.get_submodule(output_layer_name(self.network))


def output_layer_name(network: nn.Module) -> str:
    return [name for name, module in network.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))][-1]


def _output_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _builder(name: str, num_classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def build_torchvision(config: ModelConfig, class_names: tuple[str, ...], input_shape: tuple[int, int, int],
                      pretrained: bool = True) -> tuple[TorchvisionClassifier, dict | None]:
    """The configured builder's network with a head for `class_names`, and (from a checkpoint) its lineage entry.

    Raises:
        ConfigError: the checkpoint is missing, pickled, or not this builder's state dict; or the network cannot
            take images of `input_shape` (some builders fix their input size).
    """
    if config.checkpoint is None or not pretrained:
        network, lineage = _builder(config.library_name, len(class_names)), None
    else:
        weights = torchvision_checkpoint_file(config)
        state = load_file(str(weights))
        network = _builder(config.library_name, len(class_names))
        head = output_layer_name(network)
        if f"{head}.weight" not in state:
            raise ConfigError(f"model.checkpoint={config.checkpoint} is not a state dict of torchvision's "
                              f"{config.library_name} (it has no {head}.weight)")
        network = _builder(config.library_name, state[f"{head}.weight"].shape[0])
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ConfigError(f"model.checkpoint={config.checkpoint} does not fit torchvision's "
                              f"{config.library_name}: {str(error).splitlines()[0]}") from None
        if json.loads(torchvision_metadata(weights).get(CLASS_NAMES_METADATA, "[]")) != list(class_names):
            _replace_output_layer(network, len(class_names))
        lineage = {"source": f"{config.architecture} from {config.checkpoint}", "pretrained": True,
                   "files": {weights.name: sha256_file(weights)}}
    _check_input_shape(network, config, input_shape)
    log.info("%s: %s, %d parameters, head for %d classes", config.architecture,
             "random weights" if lineage is None else f"weights of {config.checkpoint}",
             sum(parameter.numel() for parameter in network.parameters()), len(class_names))
    return TorchvisionClassifier(network), lineage


def _replace_output_layer(network: nn.Module, classes: int) -> None:
    name = output_layer_name(network)
    old = network.get_submodule(name)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, classes, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    network.set_submodule(name, new)


@torch.no_grad()
def _check_input_shape(network: nn.Module, config: ModelConfig, input_shape: tuple[int, int, int]) -> None:
    """Some builders (vit_b_16, swin) take one input size only: say so now, with the fix, not in the first step."""
    try:
        network.eval()(torch.zeros(1, *input_shape))
    except (RuntimeError, AssertionError, ValueError) as error:
        raise ConfigError(f"{config.architecture} cannot take {input_shape[1]}x{input_shape[2]} images "
                          f"({str(error).splitlines()[0]}); set data.image_size to a size it takes") from None
    finally:
        network.train()


def save_torchvision(model: TorchvisionClassifier, directory: Path, spec: InputSpec,
                     class_names: tuple[str, ...]) -> None:
    """model.safetensors: the builder's state dict, its metadata naming the classes and the preprocessing."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.network.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE),
              metadata={CLASS_NAMES_METADATA: json.dumps(list(class_names)),
                        PREPROCESSING_METADATA: CheckpointPreprocessing.of_spec(spec).to_json()})


def load_torchvision(directory: Path, name: str, classes: int) -> TorchvisionClassifier:
    """A model saved by `save_torchvision` (the caller verified its sha256 manifest)."""
    network = _builder(name, classes)
    network.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return TorchvisionClassifier(network.eval())
