"""The default demo data set: Fashion-MNIST (Zalando), as Debian's dataset-fashion-mnist package installs it.

The only module that knows anything about it: where Debian puts the files, the sha256 that identify them, their
class names (IDX files carry only label numbers) and the gate thresholds its benchmarks justify. Importing them goes
through the generic IDX import like any other data set.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
NAME = "fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # label order of the IDX files
# Identifies the labels file of the real Fashion-MNIST (MNIST's files carry the same names).
TRAIN_LABELS_SHA256 = "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
# A published small CNN reaches ~0.91-0.93; below these something is wrong with the run, not with the data.
RECOMMENDED_GATE = {"min_accuracy": 0.88, "min_macro_f1": 0.87}


def is_fashion_mnist(train_labels_sha256: str) -> bool:
    return train_labels_sha256 == TRAIN_LABELS_SHA256
