"""validate_data: a Great Expectations suite over a per-image table of every split.

One row per image holds what the suite checks: label, shape, dtype, pixel range and statistics, whether a
validation/test image also appears in train, and one-hot label columns whose per-split means are the class shares.
A failed suite stops the pipeline before training, with every failed expectation named.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from aimass.config import AimassConfig, ValidationConfig
from aimass.dataset import NUM_CLASSES, ImageSet, load_image_sets
from aimass.errors import DataValidationError
from aimass.reports import markdown_table
from aimass.components.base import project_component

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ExpectationOutcome:
    description: str
    success: bool
    observed: str


@dataclass(frozen=True)
class DataValidationReport:
    success: bool
    outcomes: list[ExpectationOutcome]
    data_docs_page: Path

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]


def build_image_table(splits: dict[str, ImageSet]) -> pd.DataFrame:
    """One row per image of every split, with the columns the suite checks."""
    train_hashes = {hashlib.sha1(image.tobytes()).digest() for image in splits["train"].images}
    frames = []
    for split in SPLITS:
        images, labels = splits[split].images, splits[split].labels
        flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
        frame = pd.DataFrame({
            "split": split,
            "label": labels.astype(np.int64),
            "dtype": str(images.dtype),
            "height": images.shape[1] if images.ndim == 3 else 0,
            "width": images.shape[2] if images.ndim == 3 else 0,
            "pixel_min": flat.min(axis=1),
            "pixel_max": flat.max(axis=1),
            "pixel_mean": flat.mean(axis=1),
            "pixel_std": flat.std(axis=1),
            "in_train": [0] * len(images) if split == "train"
            else [int(hashlib.sha1(image.tobytes()).digest() in train_hashes) for image in images],
        })
        for label in range(NUM_CLASSES):
            frame[f"label_is_{label}"] = (labels == label).astype(np.float64)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def build_suite(config: ValidationConfig):
    """The expectation suite for Fashion-MNIST-like data under `config`'s thresholds."""
    import great_expectations as gx
    from great_expectations import expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    suite = gx.ExpectationSuite(name="fashion_mnist_images")
    add = suite.add_expectation
    add(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(NUM_CLASSES)),
                                        description="labels are class ids 0..9"))
    add(gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"], description="pixels are uint8"))
    for axis in ("height", "width"):
        add(gxe.ExpectColumnValuesToBeBetween(column=axis, min_value=28, max_value=28, description=f"{axis} is 28"))
    for column in ("label", "pixel_min", "pixel_max", "pixel_mean", "pixel_std"):
        add(gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"no missing or NaN {column}"))
    add(gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0.0, description="no pixel below 0"))
    add(gxe.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=1.0, description="no pixel above 255"))
    add(gxe.ExpectColumnValuesToBeBetween(
        column="pixel_mean", min_value=config.pixel_mean_min, max_value=config.pixel_mean_max,
        description="per-image mean intensity is plausible"))
    add(gxe.ExpectColumnValuesToBeBetween(
        column="pixel_std", min_value=config.pixel_std_min, description="no blank or constant images"))
    minimum_rows = {"train": config.min_rows_train, "validation": config.min_rows_validation,
                    "test": config.min_rows_test}
    low = config.reference_class_share - config.class_share_tolerance
    high = config.reference_class_share + config.class_share_tolerance
    for split in SPLITS:
        in_split = Column("split") == split
        add(gxe.ExpectTableRowCountToBeBetween(
            min_value=minimum_rows[split], row_condition=in_split,
            description=f"{split} has at least {minimum_rows[split]} images"))
        for label in range(NUM_CLASSES):
            add(gxe.ExpectColumnMeanToBeBetween(
                column=f"label_is_{label}", min_value=low, max_value=high,
                row_condition=in_split,
                description=f"class {label} is {low:.0%}..{high:.0%} of {split}"))
    add(gxe.ExpectColumnSumToBeBetween(
        column="in_train", max_value=config.max_test_images_in_train,
        row_condition=Column("split") != "train",
        description=f"at most {config.max_test_images_in_train} validation/test images also appear in train"))
    return suite


def run_suite(table: pd.DataFrame, config: ValidationConfig, docs_dir: Path) -> DataValidationReport:
    """Validate `table` with an ephemeral GX context and build its Data Docs site under `docs_dir`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("fashion_mnist")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all_splits")
    )
    suite = context.suites.add(build_suite(config))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="fashion_mnist_images", data=batch_definition, suite=suite))
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
    page = next((docs_dir / "validations").rglob("*.html"))
    return DataValidationReport(success=bool(result.success), outcomes=outcomes, data_docs_page=page)


def _observed(result: dict) -> str:
    if "observed_value" in result:
        value = result["observed_value"]
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} unexpected ({result.get('unexpected_percent') or 0:.2f}%)"
    return ""


def summary_markdown(report: DataValidationReport) -> str:
    verdict = "passed" if report.success else f"FAILED ({len(report.failures)} expectations)"
    rows = [("pass" if o.success else "**FAIL**", o.description, o.observed) for o in report.outcomes]
    return f"# Data validation {verdict}\n\n" + markdown_table(["result", "expectation", "observed"], rows)


def validate_data(config: AimassConfig, splits_dir: Path, work_dir: Path) -> DataValidationReport:
    """Run the suite over the splits in `splits_dir`; Data Docs go to `work_dir / "data_docs"`."""
    splits, _ = load_image_sets(splits_dir)
    return run_suite(build_image_table(splits), config.validation, work_dir / "data_docs")


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
        data_docs: the GX Data Docs validation page.
        summary: every expectation with its result and observed value, as Markdown.
    """
    import tempfile
    from pathlib import Path

    from aimass.components.validate_data import raise_for_failures, summary_markdown, validate_data
    from aimass.config import AimassConfig
    from aimass.reports import self_contained_html

    with tempfile.TemporaryDirectory() as work_dir:
        report = validate_data(AimassConfig.from_json(config_json), Path(splits.path), Path(work_dir))
        # GX's page pulls Bootstrap, jQuery and Vega from CDNs: keep its content, drop what would be fetched.
        Path(data_docs.path).write_text(self_contained_html(report.data_docs_page.read_text()))
    Path(summary.path).write_text(summary_markdown(report))
    for artifact in (data_docs, summary):
        artifact.metadata.update({"success": report.success, "data_md5": splits.metadata["data_md5"]})
    raise_for_failures(report)
