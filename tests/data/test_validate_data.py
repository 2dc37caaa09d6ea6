"""The Great Expectations suite, built from the data set's own profile: real data passes; each kind of damage to what
ingest wrote fails the expectation that names it."""
import shutil
from collections.abc import Callable

import numpy as np
import pytest

from aimass.ingestion.stage import describe_splits
from aimass.validation.report import raise_for_failures
from aimass.validation.stage import validate_data
from aimass.config import load_config
from aimass.data.card import SPLITS, SplitsCard
from aimass.errors import DataValidationError
from aimass.integrity import write_manifest


@pytest.fixture(scope="module")
def passing_report(tiny_config, tiny_splits_dir, tmp_path_factory):
    return validate_data(tiny_config, tiny_splits_dir, tmp_path_factory.mktemp("validation"))


def damaged(splits_dir, tmp_path, change: Callable[[dict[str, dict[str, np.ndarray]]], None]):
    """A copy of ingest's output after `change(arrays)` altered its images and labels, described again by ingest's
    own statistics, as if ingest had read such data."""
    copy = shutil.copytree(splits_dir, tmp_path / "damaged")
    arrays = {split: {kind: np.load(copy / f"{split}-{kind}.npy") for kind in ("images", "labels", "sources")}
              for split in SPLITS}
    change(arrays)
    for split, values in arrays.items():
        for kind, array in values.items():
            np.save(copy / f"{split}-{kind}.npy", array)
    describe_splits(copy, SplitsCard.read(copy).class_names)
    write_manifest(copy, {"splits": {split: len(arrays[split]["labels"]) for split in SPLITS}})
    return copy


def failures(config, splits_dir, tmp_path):
    report = validate_data(config, splits_dir, tmp_path / "docs")
    return {outcome.description: outcome.observed for outcome in report.failures}


def test_real_fashion_mnist_passes_the_suite(passing_report):
    assert passing_report.success, passing_report.failures


def test_the_suite_names_the_data_sets_own_classes(passing_report):
    descriptions = [outcome.description for outcome in passing_report.outcomes]
    assert "class 'Ankle boot' has images in test" in descriptions
    assert any(d.startswith("every label is one of the 10 classes T-shirt/top, Trouser") for d in descriptions)


def test_data_docs_page_is_written(passing_report):
    assert "aimass_data_set" in passing_report.data_docs_page.read_text()


def test_without_a_production_model_there_is_no_drift_check_and_it_says_why(passing_report):
    assert passing_report.drift_note == "no production model of fashion-mnist yet: no drift baseline"


def test_a_test_split_darkened_to_half_its_brightness_fails_the_brightness_skew(tiny_config, tiny_splits_dir,
                                                                                tmp_path):
    def darken(arrays):
        arrays["test"]["images"] = arrays["test"]["images"] // 2

    failed = failures(tiny_config, damaged(tiny_splits_dir, tmp_path, darken), tmp_path)
    brightness = next(d for d in failed if d.startswith("brightness: Jensen-Shannon distance, test vs train"))
    assert float(failed[brightness]) > float(brightness.rsplit("at most ", 1)[1])


def test_labels_outside_the_classes_fail(tiny_config, tiny_splits_dir, tmp_path):
    def relabel(arrays):
        arrays["train"]["labels"][:5] = 10

    assert any(d.startswith("every label is one of the 10 classes") for d in
               failures(tiny_config, damaged(tiny_splits_dir, tmp_path, relabel), tmp_path))


def test_blank_images_fail(tiny_config, tiny_splits_dir, tmp_path):
    def blank(arrays):
        arrays["validation"]["images"][:3] = 128

    failed = failures(tiny_config, damaged(tiny_splits_dir, tmp_path, blank), tmp_path)
    assert "no blank image: pixel standard deviation at least 0.01" in failed


def test_a_shift_in_class_shares_fails_naming_the_class_and_split(tiny_config, tiny_splits_dir, tmp_path):
    def shift(arrays):
        labels = arrays["test"]["labels"]
        labels[np.flatnonzero(labels == 3)[:80]] = 4  # most of 'Dress' in test relabelled as 'Coat'

    failed = failures(tiny_config, damaged(tiny_splits_dir, tmp_path, shift), tmp_path)
    assert any(d.startswith("class 'Dress' is ") and d.endswith("of test (train: 10.0%)") for d in failed)
    assert any(d.startswith("class 'Coat' is ") for d in failed)


def test_a_class_missing_from_a_split_fails(tiny_config, tiny_splits_dir, tmp_path):
    def drop(arrays):
        keep = arrays["validation"]["labels"] != 9
        arrays["validation"] = {name: values[keep] for name, values in arrays["validation"].items()}

    assert "class 'Ankle boot' has images in validation" in failures(
        tiny_config, damaged(tiny_splits_dir, tmp_path, drop), tmp_path)


def test_test_images_copied_from_train_fail_as_a_leak(tiny_config, tiny_splits_dir, tmp_path):
    def leak(arrays):
        arrays["test"]["images"][:4] = arrays["train"]["images"][:4]

    failed = failures(tiny_config, damaged(tiny_splits_dir, tmp_path, leak), tmp_path)
    assert failed["at most 0 test images are pixel-identical to a train image (a leak)"] == "4.0000"


def test_slightly_altered_copies_of_train_images_fail_as_near_duplicates(tiny_config, tiny_splits_dir, tmp_path):
    def near_copies(arrays):
        copies = arrays["train"]["images"][:300].astype(np.int16) + 3  # brighter by 3 of 255: no longer identical
        arrays["test"]["images"][:300] = np.clip(copies, 0, 255).astype(np.uint8)

    failed = failures(tiny_config, damaged(tiny_splits_dir, tmp_path, near_copies), tmp_path)
    assert ("at most 1.0% of test are near duplicates of train images (dHash within 3 bits, pixels within 2 of 255 "
            "on average)") in failed
    assert "at most 0 test images are pixel-identical to a train image (a leak)" not in failed


def photo_and_re_encoded_copy(image: np.ndarray, size: int, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey image enlarged into a "photo", as ingest preprocesses it back to the data set's size, and a copy of
    that photo saved as a JPEG at another size and quality, preprocessed the same way."""
    import io

    from PIL import Image

    height, width = image.shape
    photo = Image.fromarray(image).resize((4 * width, 4 * height), Image.BICUBIC)
    encoded = io.BytesIO()
    photo.resize((size, size), Image.BICUBIC).save(encoded, format="JPEG", quality=quality)
    copy = Image.open(encoded).convert("L")
    return (np.asarray(photo.resize((width, height), Image.BILINEAR)),
            np.asarray(copy.resize((width, height), Image.BILINEAR)))


def test_train_images_re_encoded_into_test_are_reported_with_the_train_image_each_copies(tiny_config,
                                                                                          tiny_splits_dir, tmp_path):
    from aimass.validation.report import summary_markdown

    planted = 40

    def plant(arrays):
        for row in range(planted):
            arrays["train"]["images"][row, 0], arrays["test"]["images"][row, 0] = photo_and_re_encoded_copy(
                arrays["train"]["images"][row, 0], size=(84, 96, 128)[row % 3], quality=(40, 60, 80)[row % 3])

    splits = damaged(tiny_splits_dir, tmp_path, plant)
    report = validate_data(tiny_config, splits, tmp_path / "docs")
    found = {pair.row: pair for pair in report.leaks["test"] if not pair.exact}
    assert len(set(found) & set(range(planted))) >= 36, sorted(found)
    train_names = np.load(splits / "train-names.npy")
    assert all(found[row].train_image == train_names[row] for row in set(found) & set(range(planted)))
    assert not report.success
    summary = summary_markdown(report)
    assert f"{len(report.leaks['test'])} test images copy a train image" in summary
    assert str(np.load(splits / "test-names.npy")[min(found)]) in summary


@pytest.mark.parametrize("setting, message", [
    ("validation.near_duplicate_radius=13", "validation.near_duplicate_radius"),
    ("validation.near_duplicate_max_pixel_difference=-1", "validation.near_duplicate_max_pixel_difference"),
])
def test_a_near_duplicate_setting_out_of_range_is_refused_when_the_configuration_loads(setting, message):
    from aimass.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [setting])


def test_a_failed_report_raises_naming_the_statistic_the_splits_the_distance_and_the_threshold(
        tiny_config, tiny_splits_dir, tmp_path):
    def darken(arrays):
        arrays["validation"]["images"] = arrays["validation"]["images"] // 3

    report = validate_data(tiny_config, damaged(tiny_splits_dir, tmp_path, darken), tmp_path / "docs")
    with pytest.raises(DataValidationError, match=r"brightness: Jensen-Shannon distance, validation vs train, at most "
                                                  r"0\.\d{4} \(observed 0\.\d{4}\)"):
        raise_for_failures(report)


def test_thresholds_come_from_the_config(tiny_config, tiny_splits_dir, tmp_path):
    strict = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "validation.max_js_distance=0.0001",
                                  "validation.sampling_allowance=0"])
    assert any(d.startswith("contrast: Jensen-Shannon distance") for d in failures(strict, tiny_splits_dir, tmp_path))
