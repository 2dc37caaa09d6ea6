"""ingest: the pinned version decoded once (cached), split by class, described for validation."""
import shutil

import numpy as np
import pytest

from aimass.data.splits import plan_splits
from aimass.ingestion.stage import ingest
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.data.card import SplitsCard
from aimass.data.importing import import_dataset
from aimass.data.versions import ensure_pinned_data, pinned_data_md5, track_data
from aimass.errors import DataVersionError
from conftest import copy_tree, init_dvc_repo


def test_splits_carry_the_pinned_data_md5(tiny_splits_dir, data_repo):
    _, manifest = load_image_sets(tiny_splits_dir)
    assert manifest["data_md5"] == pinned_data_md5(data_repo)


def test_tiny_profile_sizes_the_splits(tiny_splits_dir):
    _, manifest = load_image_sets(tiny_splits_dir)
    assert manifest["splits"] == {"train": 2_700, "validation": 300, "test": 1_000}


def test_splits_are_memory_mapped_uint8_at_the_models_input_shape(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    images = splits["test"].images
    assert isinstance(images, np.memmap) and images.dtype == np.uint8 and images.shape == (1_000, 1, 28, 28)


def test_splits_keep_every_class_equally_represented(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    for split in splits.values():
        assert np.all(np.bincount(split.labels, minlength=10) == len(split) // 10)


def test_train_and_validation_images_are_disjoint(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    train_rows = {image.tobytes() for image in splits["train"].images}
    assert not any(image.tobytes() in train_rows for image in splits["validation"].images)


def test_the_splits_card_names_the_classes_and_how_validation_was_drawn(tiny_splits_dir):
    card = SplitsCard.read(tiny_splits_dir)
    assert card.name == "fashion-mnist" and card.class_names[0] == "T-shirt/top"
    assert card.drawn == {"validation": "10% of train, stratified by class, seed 0"}
    assert card.input_spec["channels"] == 1 and card.input_spec["mean"][0] == pytest.approx(0.286, abs=0.002)


def test_the_same_seed_gives_the_same_split_and_another_seed_does_not():
    labels = {"train": np.repeat(np.arange(10), 50)}
    first = plan_splits(labels, load_config("tiny").split)
    again = plan_splits(labels, load_config("tiny").split)
    other = plan_splits(labels, load_config("tiny", ["split.seed=1"]).split)
    assert np.array_equal(first.rows["validation"][1], again.rows["validation"][1])
    assert not np.array_equal(first.rows["validation"][1], other.rows["validation"][1])


def test_missing_validation_and_test_splits_are_drawn_from_train_without_overlap():
    plan = plan_splits({"train": np.repeat(np.arange(4), 100)}, load_config("quick").split)
    rows = {split: set(indices.tolist()) for split, (_, indices) in plan.rows.items()}
    assert len(rows["test"]) == 60 and len(rows["validation"]) == 34 and len(rows["train"]) == 306
    assert not (rows["test"] & rows["validation"]) and not (rows["train"] & (rows["test"] | rows["validation"]))
    assert set(plan.drawn) == {"validation", "test"}


def test_a_second_ingest_of_the_same_version_reads_the_decoded_cache(data_repo, tmp_path, caplog):
    config = load_config("tiny", [f"data.repo_dir={data_repo}"])
    ingest(config, tmp_path / "first")
    with caplog.at_level("INFO", logger="aimass.data.decoding"):
        ingest(config, tmp_path / "second")
    assert "from the cache" in caplog.text
    assert (tmp_path / "first" / "train-images.npy").read_bytes() == (tmp_path / "second" / "train-images.npy").read_bytes()


def test_other_preprocessing_settings_decode_again_at_their_own_size(data_repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={data_repo}", "data.image_size=16", "data.channels=3"])
    ingest(config, tmp_path / "splits")
    splits, _ = load_image_sets(tmp_path / "splits")
    assert splits["validation"].images.shape[1:] == (3, 16, 16)


def test_image_files_of_mixed_sizes_and_modes_become_one_input_shape(digits_folder, tmp_path):
    repo = init_dvc_repo(tmp_path / "repo")
    import_dataset(digits_folder, repo / "data")
    track_data(repo)
    ingest(load_config("tiny", [f"data.repo_dir={repo}"]), tmp_path / "splits")
    splits, _ = load_image_sets(tmp_path / "splits")
    card = SplitsCard.read(tmp_path / "splits")
    # half the files are RGB JPEGs: colour wins; sizes differ: the median shorter side (16 of 8, 16, 24)
    assert splits["train"].images.shape[1:] == (3, 16, 16)
    assert card.class_names == tuple(str(k) for k in range(10)) and set(card.drawn) == {"validation", "test"}


def test_modified_workspace_data_is_restored_from_the_dvc_cache(tmp_path, data_repo):
    repo = copy_tree(data_repo, tmp_path / "repo")
    card = repo / "data" / "dataset.json"
    original = card.read_bytes()
    card.write_bytes(original.replace(b"fashion-mnist", b"something-else"))
    ensure_pinned_data(repo)
    assert card.read_bytes() == original


def test_pinned_version_missing_from_workspace_and_cache_is_an_error(tmp_path, data_repo):
    repo = copy_tree(data_repo, tmp_path / "repo")
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "dataset.json").unlink()
    with pytest.raises(DataVersionError, match="not in the workspace nor in the DVC cache"):
        ingest(load_config("tiny", [f"data.repo_dir={repo}"]), tmp_path / "splits")
