"""What data validation compares: each held-out split against train (skew) and this version's training data against
the profile stored with the production model (drift), with data/profile.py's distances."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.config import AimassConfig, ValidationConfig
from aimass.data.card import SPLITS, SplitsCard
from aimass.data.profile import NUMERIC_STATISTICS, DistanceCheck, compare_profiles, profile_split

HELD_OUT = ("validation", "test")


@dataclass(frozen=True)
class DistanceComparison:
    """Two profiles compared: the checks, and the histograms they were measured on (for the Data Docs)."""

    compared: str
    checks: list[DistanceCheck]
    profile: dict
    reference: dict


def load_statistics(splits_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    statistics = {}
    for split in SPLITS:
        with np.load(splits_dir / f"{split}-statistics.npz", allow_pickle=False) as stored:
            statistics[split] = {name: stored[name] for name in stored.files}
    return statistics


def skew_comparisons(profiles: dict[str, dict], config: ValidationConfig) -> list[DistanceComparison]:
    """Each held-out split's numeric and channel statistics against train's (class shares are checked per class)."""
    statistics = (*NUMERIC_STATISTICS, "channels")
    return [DistanceComparison(
        f"{split} vs train",
        compare_profiles(profiles[split], profiles["train"], f"{split} vs train", config.max_js_distance,
                         config.max_linf_distance, config.sampling_allowance, statistics),
        profiles[split], profiles["train"]) for split in HELD_OUT]


def drift_comparison(train_statistics: dict[str, np.ndarray], train_labels: np.ndarray, card: SplitsCard,
                     config: AimassConfig) -> tuple[DistanceComparison | None, str]:
    """This version's training data against the profile stored with the production model, or why not."""
    from aimass.registry import open_registry, production_or_why_not

    if not config.validation.drift_against_production:
        return None, "drift check off (validation.drift_against_production=false)"
    found, why_not = production_or_why_not(open_registry(config, card.name))
    if found is None:
        return None, f"{why_not}: no drift baseline"
    record, model_card = found
    reference = model_card.data_profile
    if reference is None or tuple(model_card.class_names) != card.class_names:
        return None, (f"production {record.version} was trained on other classes (or records no data profile): "
                      "no drift baseline")
    current = profile_split(train_statistics, train_labels, card.class_names, reference=reference)
    compared = f"train of data {card.data_md5[:12]} vs the training data of production {record.version}"
    checks = compare_profiles(current, reference, compared, config.validation.max_js_distance,
                              config.validation.max_linf_distance, config.validation.sampling_allowance)
    return DistanceComparison(compared, checks, current, reference), ""
