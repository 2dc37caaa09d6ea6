"""What a model directory holds and its model card, read without torch: steps that only check, copy or describe a
model (bless, the registry) need not pay torch's import (about 1.5 s a process) to do it. Loading the network
itself is aimass/models/artifact.py's job."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aimass.errors import ArtifactIntegrityError
from aimass.integrity import read_verified_manifest

WEIGHTS_FILE = "model.safetensors"
PROGRAM_FILE = "model.pt2"
CARD_FILE = "model.json"
MONITOR_REFERENCE_FILE = "monitor-reference.npz"  # outputs on validation images, added at registration
CARD_FORMAT_VERSION = 2
SAFETENSORS_FORMAT = "safetensors"
TRANSFORMERS_FORMAT = "transformers-safetensors"
EXPORT_FORMAT = "torch-export"
TEACHER = "teacher"  # the trained model, beside compress's candidates (each named by its method)


def read_model_card(directory: Path) -> dict[str, Any]:
    """The model card of the model in `directory`, after verifying every file's sha256.

    Raises:
        ArtifactIntegrityError: a file is missing or differs from the manifest, or the card is of a format this
            aimass does not read.
    """
    read_verified_manifest(directory)
    card = json.loads((directory / CARD_FILE).read_text())
    if card.get("format_version") != CARD_FORMAT_VERSION:
        raise ArtifactIntegrityError(f"{directory / CARD_FILE} has card format {card.get('format_version')}, this "
                                     f"aimass reads {CARD_FORMAT_VERSION}: train the model again")
    return card


def chosen_model_dir(teacher_dir: Path, candidates_dir: Path, chosen: str) -> Path:
    """Where the model the gate chose lives: the teacher's directory or its candidate's."""
    return teacher_dir if chosen == TEACHER else candidates_dir / chosen


def is_quantized(card: dict[str, Any]) -> bool:
    """Whether the model's weights are int8 (a compression backend other than float32)."""
    return card.get("compression", {}).get("backend", "float32") != "float32"
