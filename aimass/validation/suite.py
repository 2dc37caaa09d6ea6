"""The table every expectation reads (a row per image, a row per distance check) and the Great Expectations suite
built for this data set, run in an ephemeral context that also writes the Data Docs page."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aimass.config import ValidationConfig
from aimass.data.card import SPLITS, SplitsCard
from aimass.data.profile import DistanceCheck
from aimass.validation.comparisons import HELD_OUT
from aimass.validation.leaks import LeakedPair

SUITE_NAME = "aimass_data_set"
STATISTICS_ROW = "statistics"  # the `split` of distance-check rows


@dataclass(frozen=True)
class ExpectationOutcome:
    description: str
    success: bool
    observed: str


def build_table(statistics: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                class_count: int, checks: list[DistanceCheck], leaks: dict[str, list[LeakedPair]]) -> pd.DataFrame:
    """One row per image of every split, then one row per distance check."""
    validation_exact = set(statistics["validation"]["exact_hash"].tolist())
    frames = []
    for split in SPLITS:
        split_statistics, split_labels = statistics[split], labels[split]
        exact, near = np.zeros(len(split_labels)), np.zeros(len(split_labels))
        for pair in leaks.get(split, []):
            (exact if pair.exact else near)[pair.row] = 1.0
        frame = pd.DataFrame({
            "split": split,
            "label": split_labels.astype(np.int64),
            "brightness": split_statistics["brightness"].astype(np.float64),
            "contrast": split_statistics["contrast"].astype(np.float64),
            "original_width": split_statistics["width"], "original_height": split_statistics["height"],
            "original_channels": split_statistics["channels"],
            # NaN on train rows: sums and means over these columns count held-out images only
            "duplicate_of_train": exact if split != "train" else np.nan,
            "near_duplicate_of_train": near if split != "train" else np.nan,
            "duplicate_of_validation": np.array([h in validation_exact for h in
                                                 split_statistics["exact_hash"].tolist()], dtype=float)
            if split == "test" else np.nan,
        })
        for label in range(class_count):
            frame[f"label_is_{label}"] = (split_labels == label).astype(np.float64)
        frames.append(frame)
    frames.append(pd.DataFrame({
        "split": STATISTICS_ROW,
        "check": [check_id(check) for check in checks],
        "distance": [check.distance for check in checks],
    }))
    return pd.concat(frames, ignore_index=True)


def check_id(check: DistanceCheck) -> str:
    return f"{check.statistic} | {check.compared}"


def build_suite(card: SplitsCard, train_shares: np.ndarray, counts: dict[str, int], checks: list[DistanceCheck],
                config: ValidationConfig):
    """The expectation suite for this data set: its classes, its training split's class shares, its checks."""
    import great_expectations as gx
    from great_expectations import expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    from aimass.data.profile import linf_noise

    suite = gx.ExpectationSuite(name=SUITE_NAME)
    add = suite.add_expectation
    images = Column("split") != STATISTICS_ROW
    names = card.class_names
    add(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(len(names))), row_condition=images,
                                        description=f"every label is one of the {len(names)} classes "
                                                    f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"))
    for column in ("label", "brightness", "contrast"):
        add(gxe.ExpectColumnValuesToNotBeNull(column=column, row_condition=images,
                                              description=f"every image has a {column}"))
    add(gxe.ExpectColumnValuesToBeBetween(
        column="contrast", min_value=config.min_contrast, row_condition=images,
        description=f"no blank image: pixel standard deviation at least {config.min_contrast}"))
    for split in HELD_OUT:
        in_split = Column("split") == split
        for label, name in enumerate(names):
            add(gxe.ExpectColumnSumToBeBetween(column=f"label_is_{label}", min_value=1, row_condition=in_split,
                                               description=f"class {name!r} has images in {split}"))
            tolerance = config.class_share_tolerance + config.sampling_allowance * linf_noise(
                counts[split], counts["train"], train_shares[label])
            low, high = max(train_shares[label] - tolerance, 0.0), min(train_shares[label] + tolerance, 1.0)
            add(gxe.ExpectColumnMeanToBeBetween(
                column=f"label_is_{label}", min_value=low, max_value=high, row_condition=in_split,
                description=f"class {name!r} is {low:.1%}..{high:.1%} of {split} (train: {train_shares[label]:.1%})"))
        add(gxe.ExpectColumnSumToBeBetween(
            column="duplicate_of_train", max_value=config.max_exact_duplicates, row_condition=in_split,
            description=f"at most {config.max_exact_duplicates} {split} images are pixel-identical to a train "
                        "image (a leak)"))
        add(gxe.ExpectColumnMeanToBeBetween(
            column="near_duplicate_of_train", max_value=config.max_near_duplicate_share, row_condition=in_split,
            description=f"at most {config.max_near_duplicate_share:.1%} of {split} are near duplicates of train "
                        f"images (dHash within {config.near_duplicate_radius} bits, pixels within "
                        f"{config.near_duplicate_max_pixel_difference:g} of 255 on average)"))
    add(gxe.ExpectColumnSumToBeBetween(
        column="duplicate_of_validation", max_value=config.max_exact_duplicates, row_condition=Column("split") == "test",
        description=f"at most {config.max_exact_duplicates} test images are pixel-identical to a validation image"))
    for check in checks:
        add(gxe.ExpectColumnMaxToBeBetween(
            column="distance", max_value=check.threshold, row_condition=Column("check") == check_id(check),
            description=f"{check.statistic}: {check.kind} distance, {check.compared}, at most {check.threshold:.4f}"))
    return suite


def run_suite(table: pd.DataFrame, make_suite: Callable[[], object],
              docs_dir: Path) -> tuple[bool, list[ExpectationOutcome], Path]:
    """Validate `table` with an ephemeral GX context and build its Data Docs site under `docs_dir`.
    `make_suite` builds the suite once the context exists (GX refuses suites made before one)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("images")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all_splits")
    )
    suite = context.suites.add(make_suite())
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite))
    context.add_data_docs_site(site_name="local", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="validate_data", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["local"])],
        result_format={"result_format": "SUMMARY"},
    ))
    result = checkpoint.run(batch_parameters={"dataframe": table})
    outcomes = [
        ExpectationOutcome(
            description=item.expectation_config.description or item.expectation_config.type,
            success=bool(item.success),
            observed=_observed(item.result),
        )
        for validation in result.run_results.values()
        for item in validation.results
    ]
    outcomes.sort(key=lambda outcome: outcome.success)  # failures first
    page = next((docs_dir / "validations").rglob("*.html"))
    return bool(result.success), outcomes, page


def _observed(result: dict) -> str:
    if "observed_value" in result:
        value = result["observed_value"]
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if result.get("partial_unexpected_list"):
        values = result["partial_unexpected_list"]
        shown = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values[:3])
        return f"{result.get('unexpected_count', len(values))} unexpected ({shown})"
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} unexpected ({result.get('unexpected_percent') or 0:.2f}%)"
    return ""
