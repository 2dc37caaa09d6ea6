"""The Great Expectations suite: real data passes; each kind of injected damage fails the named expectation."""
import numpy as np
import pytest

from aimass.components.validate_data import build_image_table, raise_for_failures, run_suite, validate_data
from aimass.dataset import ImageSet, load_image_sets
from aimass.errors import DataValidationError


@pytest.fixture(scope="module")
def tiny_splits(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    return splits


def validate(splits, config, tmp_path):
    return run_suite(build_image_table(splits), config.validation, tmp_path / "docs")


def damaged(splits, split, images=None, labels=None):
    copy = dict(splits)
    copy[split] = ImageSet(splits[split].images if images is None else images,
                           splits[split].labels if labels is None else labels)
    return copy


def failed_descriptions(report):
    return {outcome.description for outcome in report.failures}


def test_real_fashion_mnist_passes_the_suite(tiny_config, tiny_splits_dir, tmp_path):
    report = validate_data(tiny_config, tiny_splits_dir, tmp_path)
    assert report.success, report.failures


def test_data_docs_page_is_written(tiny_config, tiny_splits_dir, tmp_path):
    report = validate_data(tiny_config, tiny_splits_dir, tmp_path)
    assert "fashion_mnist_images" in report.data_docs_page.read_text()


def test_labels_outside_0_to_9_fail(tiny_splits, tiny_config, tmp_path):
    labels = tiny_splits["train"].labels.copy()
    labels[:5] = 10
    report = validate(damaged(tiny_splits, "train", labels=labels), tiny_config, tmp_path)
    assert "labels are class ids 0..9" in failed_descriptions(report)


def test_nan_images_fail_the_not_null_expectations(tiny_splits, tiny_config, tmp_path):
    images = tiny_splits["test"].images.astype(np.float32)
    images[3] = np.nan
    report = validate(damaged(tiny_splits, "test", images=images), tiny_config, tmp_path)
    assert {"no missing or NaN pixel_mean", "pixels are uint8"} <= failed_descriptions(report)


def test_constant_images_fail(tiny_splits, tiny_config, tmp_path):
    images = tiny_splits["validation"].images.copy()
    images[:3] = 128
    report = validate(damaged(tiny_splits, "validation", images=images), tiny_config, tmp_path)
    assert failed_descriptions(report) == {"no blank or constant images"}


def test_a_shift_in_class_proportions_fails_naming_the_class(tiny_splits, tiny_config, tmp_path):
    labels = tiny_splits["train"].labels.copy()
    labels[np.flatnonzero(labels == 3)[:200]] = 4  # most of class 3 relabelled as class 4
    report = validate(damaged(tiny_splits, "train", labels=labels), tiny_config, tmp_path)
    assert {"class 3 is 8%..12% of train", "class 4 is 8%..12% of train"} <= failed_descriptions(report)


def test_test_images_copied_from_train_fail_the_leakage_expectation(tiny_splits, tiny_config, tmp_path):
    images = tiny_splits["test"].images.copy()
    images[:4] = tiny_splits["train"].images[:4]
    report = validate(damaged(tiny_splits, "test", images=images), tiny_config, tmp_path)
    assert failed_descriptions(report) == {"at most 0 validation/test images also appear in train"}


def test_too_few_rows_fail_the_row_count(tiny_splits, tiny_config, tmp_path):
    half = tiny_splits["test"].take(np.arange(500))
    report = validate(damaged(tiny_splits, "test", images=half.images, labels=half.labels), tiny_config, tmp_path)
    assert "test has at least 900 images" in failed_descriptions(report)


def test_a_failed_report_raises_naming_each_failed_expectation(tiny_splits, tiny_config, tmp_path):
    labels = tiny_splits["train"].labels.copy()
    labels[:5] = 12
    report = validate(damaged(tiny_splits, "train", labels=labels), tiny_config, tmp_path)
    with pytest.raises(DataValidationError, match=r"labels are class ids 0\.\.9 \(observed 5 unexpected"):
        raise_for_failures(report)
