"""Model artifacts: weights in safetensors, a JSON model card, and a sha256 manifest. Never pickle.

Layout of a model directory:
    model.safetensors  the state dict (tensors only: loading cannot execute code)
    model.json         architecture config, input normalisation, class names, lineage, metrics, resolved config
    manifest.json      sha256 of both, checked on every load
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from aimass.architecture import PIXEL_MEAN, PIXEL_STD, build_classifier
from aimass.config import ModelConfig
from aimass.dataset import CLASS_NAMES
from aimass.integrity import read_verified_manifest, write_manifest

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
CARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    card: dict[str, Any]


def save_model(directory: Path, module: nn.Module, model_config: ModelConfig, card: dict[str, Any]) -> dict:
    """Write weights, card and manifest into `directory`; returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    full_card = {
        "format_version": CARD_FORMAT_VERSION,
        "architecture": model_config.model_dump(mode="json"),
        "input": {"shape": [1, 28, 28], "dtype": "uint8", "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD},
        "class_names": list(CLASS_NAMES),
        **card,
    }
    (directory / CARD_FILE).write_text(json.dumps(full_card, indent=2, sort_keys=True) + "\n")
    return write_manifest(directory, {"kind": "aimass-model"})


def load_model(directory: Path) -> LoadedModel:
    """Rebuild the model from `directory` after verifying every file's sha256.

    Raises:
        ArtifactIntegrityError: a file is missing or differs from the manifest.
    """
    read_verified_manifest(directory)
    card = json.loads((directory / CARD_FILE).read_text())
    module = build_classifier(ModelConfig.model_validate(card["architecture"]))
    module.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    module.eval()
    return LoadedModel(module, card)
