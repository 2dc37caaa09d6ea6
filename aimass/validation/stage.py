"""The validate_data stage's work: the suite over one data version's splits, skew and drift included."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aimass.config import AimassConfig
from aimass.data.card import SPLITS, SplitsCard
from aimass.data.profile import PROFILE_FILE, DistanceCheck
from aimass.validation.comparisons import drift_comparison, load_statistics, skew_comparisons
from aimass.validation.leaks import find_leaks
from aimass.validation.report import DataValidationReport
from aimass.validation.suite import build_suite, build_table, run_suite


def validate_data(config: AimassConfig, splits_dir: Path, work_dir: Path) -> DataValidationReport:
    """Run the suite over the splits in `splits_dir`; Data Docs go to `work_dir / "data_docs"`."""
    card = SplitsCard.read(splits_dir)
    statistics = load_statistics(splits_dir)
    labels = {split: np.load(splits_dir / f"{split}-labels.npy") for split in SPLITS}
    profiles = json.loads((splits_dir / PROFILE_FILE).read_text())
    comparisons = skew_comparisons(profiles, config.validation)
    drift, drift_note = drift_comparison(statistics["train"], labels["train"], card, config)
    comparisons += [drift] if drift else []
    checks = [check for comparison in comparisons for check in comparison.checks]
    quarantined_share = card.quarantined / max(card.quarantined + sum(card.counts.values()), 1)
    checks.append(DistanceCheck("unreadable files left out", "at import (--skip-bad-images)", "share",
                                quarantined_share, config.validation.max_quarantined_share))
    train_shares = np.bincount(labels["train"], minlength=len(card.class_names)) / max(len(labels["train"]), 1)
    leaks = find_leaks(splits_dir, statistics, config.validation)
    table = build_table(statistics, labels, len(card.class_names), checks, leaks)
    success, outcomes, page = run_suite(
        table, lambda: build_suite(card, train_shares, card.counts, checks, config.validation), work_dir / "data_docs")
    return DataValidationReport(success, outcomes, page, comparisons, drift_note, leaks)
