"""The two ends of the gate: bless the chosen model when it passed, fail the run loudly when it did not.

Blessing produces the artifact later stages (registry push, deployment) consume, so nothing downstream can pick up a
model the gate did not pass. No torch: the model is verified from its card and manifest, not loaded.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from aimass.errors import GateRejectedError
from aimass.models.card import chosen_model_dir, read_model_card


def bless(teacher_dir: Path, candidates_dir: Path, chosen: str, blessed_dir: Path) -> dict:
    """Copy the chosen model (the teacher or a candidate), verified, to `blessed_dir`; returns its model card."""
    source = chosen_model_dir(teacher_dir, candidates_dir, chosen)
    card = read_model_card(source)  # verifies every sha256 before the copy is trusted
    shutil.copytree(source, blessed_dir, dirs_exist_ok=True)
    return card


def reject(reasons: list[str]) -> None:
    raise GateRejectedError("the evaluation gate rejected the model: " + "; ".join(reasons))
