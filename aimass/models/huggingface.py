"""Hugging Face image-classification checkpoints (transformers' AutoModelForImageClassification) as aimass models.

A checkpoint is always a folder (aimass/models/checkpoint.py finds or fetches it); weights load from safetensors only
and remote code never runs. Its head is replaced for the data set's classes (num_labels, id2label, label2id) unless
it already answers exactly those classes. A model aimass trains from a checkpoint is saved with save_pretrained plus
its image processor's settings, so the model's own folder is a checkpoint for the next fine-tuning.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from aimass.errors import ConfigError
from aimass.models.architecture import LibraryClassifier
from aimass.data.image_processor import CONFIG_FILE, PROCESSOR_FILE, processor_settings
from aimass.models.checkpoint import checkpoint_files, checkpoint_folder

log = logging.getLogger(__name__)


class HuggingFaceClassifier(LibraryClassifier):
    """A transformers image classifier: it takes `pixel_values` and answers an output object holding the logits."""

    @property
    def head(self) -> nn.Module:
        """The layers that map features to classes (every transformers image classifier names them `classifier`)."""
        return self.network.classifier

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(pixel_values=pixels).logits


def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()  # its load report goes to our log, in one line, instead
    transformers.logging.disable_progress_bar()
    return transformers


def from_checkpoint(architecture: str, class_names: tuple[str, ...], input_channels: int,
                    pretrained: bool = True) -> tuple[HuggingFaceClassifier, dict]:
    """The checkpoint's network with a head for `class_names`, and its lineage entry for the model card (source,
    whether weights were loaded, sha256 of each file). A folder without weights, or `pretrained=False`, gives the
    architecture from random weights.

    Raises:
        ConfigError: the checkpoint takes another number of channels than the images feed it.
    """
    transformers = _transformers()
    folder = checkpoint_folder(architecture)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    same_classes = _class_names(config) == list(class_names)
    config.id2label = dict(enumerate(class_names))  # num_labels follows from it
    config.label2id = {name: index for index, name in enumerate(class_names)}
    if config.num_channels != input_channels:
        raise ConfigError(f"{architecture} takes {config.num_channels}-channel images, the input spec gives "
                          f"{input_channels}; set data.channels={config.num_channels} or choose another checkpoint")
    with_weights = pretrained and any(folder.glob("*.safetensors"))
    if with_weights:
        network = transformers.AutoModelForImageClassification.from_pretrained(
            folder, config=config, local_files_only=True, use_safetensors=True, ignore_mismatched_sizes=True)
        if not same_classes:
            _reset(network.classifier)  # same count, other classes: its head's weights mean nothing here
    else:
        network = transformers.AutoModelForImageClassification.from_config(config)
    log.info("%s: %s, %d parameters, head for %d classes", architecture,
             "pretrained weights" if with_weights else "random weights", sum(p.numel() for p in network.parameters()),
             len(class_names))
    return HuggingFaceClassifier(network), {"source": architecture, "pretrained": with_weights,
                                            "files": checkpoint_files(folder)}


def _class_names(config) -> list[str]:
    mapping = getattr(config, "id2label", None) or {}
    return [mapping[index] for index in sorted(mapping, key=int)]


def _reset(head: nn.Module) -> None:
    for module in head.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def save_network(model: HuggingFaceClassifier, directory: Path, spec) -> None:
    """config.json and model.safetensors (save_pretrained) plus the image processor's settings for `spec`."""
    _transformers()
    model.network.save_pretrained(directory, safe_serialization=True)
    settings = processor_settings(spec)
    if settings is not None:
        (directory / PROCESSOR_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def load_network(directory: Path) -> HuggingFaceClassifier:
    """A model saved by `save_network` (the caller verified its sha256 manifest)."""
    if not (directory / CONFIG_FILE).is_file():
        raise ConfigError(f"{directory} has no {CONFIG_FILE}")
    network = _transformers().AutoModelForImageClassification.from_pretrained(
        directory, local_files_only=True, use_safetensors=True)
    return HuggingFaceClassifier(network.eval())
