"""validate_data: a Great Expectations suite built from the data set's own profile, with skew and drift checks.

Nothing in the suite is a constant of one data set: the class set and the per-split class shares come from the
data card and the training split, the distributions from the training split's profile. One table feeds the suite:
a row per image (split, label, brightness, contrast, original size and channels, whether a held-out image duplicates
a training image exactly or by perceptual hash) and a row per distance check (split against train: skew; this
version's training data against the production model's: drift), each with its threshold. A failed suite stops the
pipeline before training, naming every failed expectation; the Data Docs page shows each compared pair of
histograms side by side.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from aimass.components.base import project_component
from aimass.config import AimassConfig, ValidationConfig
from aimass.data.card import SPLITS, SplitsCard
from aimass.data.profile import (CATEGORICAL_STATISTICS, NUMERIC_STATISTICS, PROFILE_FILE, DistanceCheck,
                                 compare_profiles, profile_split)
from aimass.errors import DataValidationError
from aimass.reports import figure_png_base64, markdown_table

SUITE_NAME = "aimass_data_set"
STATISTICS_ROW = "statistics"  # the `split` of distance-check rows
HELD_OUT = ("validation", "test")


@dataclass(frozen=True)
class ExpectationOutcome:
    description: str
    success: bool
    observed: str


@dataclass(frozen=True)
class DistanceComparison:
    """Two profiles compared: the checks, and the histograms they were measured on (for the Data Docs)."""

    compared: str
    checks: list[DistanceCheck]
    profile: dict
    reference: dict


@dataclass(frozen=True)
class DataValidationReport:
    success: bool
    outcomes: list[ExpectationOutcome]
    data_docs_page: Path
    comparisons: list[DistanceComparison]
    drift_note: str  # why there was no drift check, when there was none

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]


# ---- what is compared ----

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
    from aimass.registry import open_registry, production_card

    if not config.validation.drift_against_production:
        return None, "drift check off (validation.drift_against_production=false)"
    registry = open_registry(config, card.name)
    found = production_card(registry)
    if found is None:
        return None, f"no production model of {registry.model_name} yet: no drift baseline"
    record, model_card = found
    reference = model_card.get("data_profile")
    if reference is None or tuple(model_card.get("class_names", ())) != card.class_names:
        return None, (f"production {record.version} was trained on other classes (or records no data profile): "
                      "no drift baseline")
    current = profile_split(train_statistics, train_labels, card.class_names, reference=reference)
    compared = f"train of data {card.data_md5[:12]} vs the training data of production {record.version}"
    checks = compare_profiles(current, reference, compared, config.validation.max_js_distance,
                              config.validation.max_linf_distance, config.validation.sampling_allowance)
    return DistanceComparison(compared, checks, current, reference), ""


# ---- the table ----

def build_table(statistics: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                class_count: int, checks: list[DistanceCheck]) -> pd.DataFrame:
    """One row per image of every split, then one row per distance check."""
    train_exact = set(statistics["train"]["exact_hash"].tolist())
    train_near = set(statistics["train"]["near_hash"].tolist())
    validation_exact = set(statistics["validation"]["exact_hash"].tolist())
    frames = []
    for split in SPLITS:
        split_statistics, split_labels = statistics[split], labels[split]
        exact = np.array([h in train_exact for h in split_statistics["exact_hash"].tolist()], dtype=float)
        near = np.array([h in train_near for h in split_statistics["near_hash"].tolist()], dtype=float)
        frame = pd.DataFrame({
            "split": split,
            "label": split_labels.astype(np.int64),
            "brightness": split_statistics["brightness"].astype(np.float64),
            "contrast": split_statistics["contrast"].astype(np.float64),
            "original_width": split_statistics["width"], "original_height": split_statistics["height"],
            "original_channels": split_statistics["channels"],
            # NaN on train rows: sums and means over these columns count held-out images only
            "duplicate_of_train": exact if split != "train" else np.nan,
            "near_duplicate_of_train": (near * (1 - exact)) if split != "train" else np.nan,
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


# ---- the suite ----

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
            description=f"at most {config.max_near_duplicate_share:.0%} of {split} are near duplicates of train "
                        "images (same perceptual hash)"))
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


# ---- the stage ----

def validate_data(config: AimassConfig, splits_dir: Path, work_dir: Path) -> DataValidationReport:
    """Run the suite over the splits in `splits_dir`; Data Docs go to `work_dir / "data_docs"`."""
    import json

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
    table = build_table(statistics, labels, len(card.class_names), checks)
    success, outcomes, page = run_suite(
        table, lambda: build_suite(card, train_shares, card.counts, checks, config.validation), work_dir / "data_docs")
    return DataValidationReport(success, outcomes, page, comparisons, drift_note)


def histograms_html(comparisons: list[DistanceComparison]) -> str:
    """Each compared pair of histograms side by side, one row per comparison, as an HTML section."""
    import html

    from matplotlib.figure import Figure

    sections = []
    for comparison in comparisons:
        statistics = [check.statistic for check in comparison.checks]
        figure = Figure(figsize=(3.2 * len(statistics), 2.6))
        axes_row = figure.subplots(1, len(statistics), squeeze=False)[0]
        for axes, check in zip(axes_row, comparison.checks):
            shares, reference = _shares(comparison.profile, check.statistic), _shares(comparison.reference,
                                                                                    check.statistic)
            positions = np.arange(len(reference))
            axes.bar(positions - 0.2, reference, width=0.4, label="reference")
            axes.bar(positions + 0.2, shares, width=0.4, label="compared")
            axes.set_title(f"{check.statistic}: {check.distance:.3f} (max {check.threshold:.3f})",
                           color="black" if check.passed else "red", fontsize=9)
            axes.set_xticks([])
        axes_row[0].legend(fontsize=7)
        sections.append(f"<h3>{html.escape(comparison.compared)}</h3><img alt='{html.escape(comparison.compared)}' "
                        f"src='data:image/png;base64,{figure_png_base64(figure)}'/>")
    return ("<section><h2>Skew and drift: histograms side by side</h2><p>Bins of numeric statistics are cut at the "
            "reference's deciles; a bar is a bin's share of images.</p>" + "".join(sections) + "</section>")


def _shares(profile: dict, statistic: str) -> np.ndarray:
    if statistic in CATEGORICAL_STATISTICS:
        counts = np.asarray(list(profile["categorical"][statistic].values()), dtype=float)
    else:
        counts = np.asarray(profile["numeric"][statistic]["counts"], dtype=float)
    return counts / max(counts.sum(), 1)


def summary_markdown(report: DataValidationReport) -> str:
    verdict = "passed" if report.success else f"FAILED ({len(report.failures)} expectations)"
    rows = [("pass" if o.success else "**FAIL**", o.description, o.observed) for o in report.outcomes]
    note = f"\n\nDrift: {report.drift_note}\n" if report.drift_note else ""
    return f"# Data validation {verdict}\n\n" + markdown_table(["result", "expectation", "observed"], rows) + note


def raise_for_failures(report: DataValidationReport) -> None:
    """Raises DataValidationError naming every failed expectation, if any failed."""
    if not report.success:
        failed = "; ".join(f"{o.description} (observed {o.observed})" for o in report.failures)
        raise DataValidationError(f"data validation failed, {len(report.failures)} expectations: {failed}")


@project_component
def validate_data_component(config_json: str, splits: Input[Dataset], data_docs: Output[HTML],
                            summary: Output[Markdown]):
    """Validate the splits with Great Expectations; fail the step (and so the run) if any expectation fails.

    Args:
        config_json: the resolved AimassConfig as JSON.
        splits: the ingest output.
        data_docs: the GX Data Docs validation page, with the skew and drift histograms side by side.
        summary: every expectation with its result and observed value, as Markdown.
    """
    import tempfile
    from pathlib import Path

    from aimass.components.validate_data import (histograms_html, raise_for_failures, summary_markdown,
                                                 validate_data)
    from aimass.config import AimassConfig
    from aimass.reports import self_contained_html

    with tempfile.TemporaryDirectory() as work_dir:
        report = validate_data(AimassConfig.from_json(config_json), Path(splits.path), Path(work_dir))
        # GX's page pulls Bootstrap, jQuery and Vega from CDNs: keep its content, drop what would be fetched.
        page = self_contained_html(report.data_docs_page.read_text())
        Path(data_docs.path).write_text(page.replace("</body>", histograms_html(report.comparisons) + "</body>", 1))
    Path(summary.path).write_text(summary_markdown(report))
    for artifact in (data_docs, summary):
        artifact.metadata.update({"success": report.success, "data_md5": splits.metadata["data_md5"]})
    raise_for_failures(report)
