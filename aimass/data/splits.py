"""How a data version's splits are made: the source's own train/validation/test where it has them, else drawn
from its train split, stratified by class with a fixed seed, so the same version and config always give the same
splits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aimass.config import SplitConfig
from aimass.data.card import SPLITS
from aimass.errors import DataVersionError


@dataclass(frozen=True)
class SplitPlan:
    """Which rows of which source split make each output split, and how the drawn ones were drawn."""

    rows: dict[str, tuple[str, np.ndarray]]  # output split -> (source split, row indices)
    drawn: dict[str, str]


def stratified_sample(labels: np.ndarray, indices: np.ndarray, size: int | float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (sample, rest) keeping class proportions; `size` is a count or a fraction."""
    if isinstance(size, int) and size >= len(indices):
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split  # 1.3 s of import, paid only by runs that draw a split

    try:
        sample, rest = train_test_split(indices, train_size=size, stratify=labels[indices], random_state=seed)
    except ValueError as error:  # a class too rare to stratify
        raise DataVersionError(f"cannot split the data set by class ({error}); give every class more images or "
                               "provide validation and test splits in the source") from error
    return np.sort(sample), np.sort(rest)


def plan_splits(source_labels: dict[str, np.ndarray], config: SplitConfig) -> SplitPlan:
    """Train (at most `train_limit`), validation and test (at most `test_limit`): the source's own where it has them,
    else drawn from its train split, test first."""
    labels = source_labels["train"]
    pool = np.arange(len(labels))
    if config.train_limit is not None:
        pool, _ = stratified_sample(labels, pool, config.train_limit, config.seed)
    rows, drawn = {}, {}
    for split, fraction in (("test", config.test_fraction), ("validation", config.validation_fraction)):
        if split in source_labels:
            rows[split] = (split, np.arange(len(source_labels[split])))
        else:
            taken, pool = stratified_sample(labels, pool, fraction, config.seed)
            rows[split] = ("train", taken)
            drawn[split] = f"{fraction:.0%} of train, stratified by class, seed {config.seed}"
    if config.test_limit is not None:
        source, test_rows = rows["test"]
        sample, _ = stratified_sample(source_labels[source], test_rows, config.test_limit, config.seed)
        rows["test"] = (source, sample)
    rows["train"] = ("train", pool)
    return SplitPlan(rows={split: rows[split] for split in SPLITS}, drawn=drawn)
