"""timm (PyTorch Image Models) networks as aimass models: `model.architecture=timm:NAME`, from random weights or from
a local checkpoint folder in timm's save_pretrained layout (`model.checkpoint`). Nothing is downloaded.

A checkpoint's network is built as it was saved (its config.json: architecture, classes, input channels, model_args),
its safetensors weights are loaded strictly, and its classifier is replaced (timm's reset_classifier) unless it
already answers exactly the data set's classes. A model aimass trains is saved in the same layout, with the run's
preprocessing as its pretrained_cfg, so its folder is a checkpoint for the next fine-tuning.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from aimass.config import ModelConfig
from aimass.data.image_processor import CONFIG_FILE, timm_data_config
from aimass.data.preprocess import InputSpec
from aimass.errors import ConfigError
from aimass.models.architecture import LibraryClassifier
from aimass.models.checkpoint import WEIGHTS_FILE, checkpoint_files, timm_checkpoint_folder

log = logging.getLogger(__name__)


class TimmClassifier(LibraryClassifier):
    @property
    def head(self) -> nn.Module:
        return self.network.get_classifier()


def build_timm(config: ModelConfig, class_names: tuple[str, ...], input_channels: int,
               pretrained: bool = True) -> tuple[TimmClassifier, dict | None]:
    """The configured timm network with a head for `class_names`, and (from a checkpoint) its lineage entry.

    Raises:
        ConfigError: the checkpoint is missing, pickled or another network (aimass/models/checkpoint.py), or takes
            another number of channels than the images feed it.
    """
    import timm

    if config.checkpoint is None or not pretrained:
        network = timm.create_model(config.library_name, pretrained=False, num_classes=len(class_names),
                                    in_chans=input_channels)
        log.info("%s: random weights, %d parameters", config.architecture, _parameters(network))
        return TimmClassifier(network), None
    folder = timm_checkpoint_folder(config)
    network = timm.create_model(f"local-dir:{folder}", pretrained=False)  # as saved: classes, channels, model_args
    with_weights = (folder / WEIGHTS_FILE).is_file()  # else config.json alone: its network, random weights
    if with_weights:
        network.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    channels = network.pretrained_cfg["input_size"][0]
    if channels != input_channels:
        raise ConfigError(f"model.checkpoint={folder} takes {channels}-channel images, the input spec gives "
                          f"{input_channels}; set data.channels={channels} or choose another checkpoint")
    if _label_names(folder) != list(class_names):  # another count, or the same count of other classes
        network.reset_classifier(len(class_names))
    log.info("%s: %s of %s, %d parameters, head for %d classes", config.architecture,
             "weights" if with_weights else "config alone (random weights)", folder, _parameters(network),
             len(class_names))
    return TimmClassifier(network), {"source": f"{config.architecture} from {folder}", "pretrained": with_weights,
                                     "files": checkpoint_files(folder)}


def _label_names(folder: Path) -> list[str]:
    """The classes the checkpoint's head answers (timm stores a list, or an {index: name} mapping)."""
    names = json.loads((folder / CONFIG_FILE).read_text()).get("label_names") or []
    return [names[key] for key in sorted(names, key=int)] if isinstance(names, dict) else [str(n) for n in names]


def _parameters(network: nn.Module) -> int:
    return sum(parameter.numel() for parameter in network.parameters())


def save_timm(model: TimmClassifier, directory: Path, spec: InputSpec, class_names: tuple[str, ...]) -> None:
    """config.json (architecture, classes, model_args, pretrained_cfg = this run's preprocessing) and
    model.safetensors, as timm's save_pretrained writes them."""
    import timm

    timm.models.save_for_hf(model.network, directory, safe_serialization=True, data_config=timm_data_config(spec),
                            model_config={"label_names": list(class_names)})


def load_timm(directory: Path) -> TimmClassifier:
    """A model saved by `save_timm` (the caller verified its sha256 manifest)."""
    import timm

    network = timm.create_model(f"local-dir:{directory}", pretrained=False)
    network.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return TimmClassifier(network.eval())
