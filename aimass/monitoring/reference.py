"""The reference outputs kept with a model: its class probabilities on validation images, computed when the model
is registered and stored in its directory (`monitor-reference.npz`, listed in the sha256 manifest like every other
file), so every server and `aimass monitor` compare live outputs with the same sample."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from aimass.integrity import MANIFEST_NAME, read_verified_manifest, write_manifest
from aimass.models.card import MONITOR_REFERENCE_FILE


def reference_outputs(module, images: np.ndarray, spec, count: int) -> np.ndarray:
    """The model's class probabilities on up to `count` of `images` (uint8, N x C x H x W), spread evenly over them."""
    from aimass.models.architecture import predict_probabilities

    chosen = np.unique(np.linspace(0, len(images) - 1, num=min(count, len(images))).astype(int))
    return predict_probabilities(module, np.asarray(images[chosen]), spec)


def with_reference_outputs(model_dir: Path, probabilities: np.ndarray, target_dir: Path) -> Path:
    """A copy of the verified `model_dir` in `target_dir` holding the reference outputs, its manifest rewritten."""
    manifest = read_verified_manifest(model_dir)
    shutil.copytree(model_dir, target_dir)
    np.savez(target_dir / MONITOR_REFERENCE_FILE, probabilities=np.asarray(probabilities, dtype=np.float32))
    write_manifest(target_dir, {key: value for key, value in manifest.items() if key != "sha256"})
    return target_dir


def read_reference_outputs(model_dir: Path) -> np.ndarray | None:
    """The reference outputs of a verified model directory; None for a model registered without them."""
    listed = json.loads((model_dir / MANIFEST_NAME).read_text())["sha256"]
    if MONITOR_REFERENCE_FILE not in listed:
        return None
    with np.load(model_dir / MONITOR_REFERENCE_FILE, allow_pickle=False) as stored:
        return stored["probabilities"]
