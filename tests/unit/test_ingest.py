import shutil

import numpy as np
import pytest

from aimass.components.ingest import ingest, split_dataset
from aimass.config import load_config
from aimass.data_version import ensure_pinned_data, pinned_data_md5
from aimass.dataset import ImageSet, load_image_sets
from aimass.errors import DataVersionError
from conftest import copy_tree


def test_splits_carry_the_pinned_data_md5(tiny_splits_dir, data_repo):
    _, manifest = load_image_sets(tiny_splits_dir)
    assert manifest["data_md5"] == pinned_data_md5(data_repo)


def test_tiny_profile_sizes_the_splits(tiny_splits_dir):
    _, manifest = load_image_sets(tiny_splits_dir)
    assert manifest["splits"] == {"train": 2_700, "validation": 300, "test": 1_000}


def test_splits_keep_every_class_equally_represented(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    for split in splits.values():
        assert np.all(np.bincount(split.labels, minlength=10) == len(split) // 10)


def test_train_and_validation_images_are_disjoint(tiny_splits_dir):
    splits, _ = load_image_sets(tiny_splits_dir)
    train_rows = {image.tobytes() for image in splits["train"].images}
    assert not any(image.tobytes() in train_rows for image in splits["validation"].images)


def test_the_same_seed_gives_the_same_split_and_another_seed_does_not():
    rng = np.random.default_rng(1)
    source = {"train": ImageSet(rng.integers(0, 255, (500, 28, 28), dtype=np.uint8), np.repeat(np.arange(10), 50)),
              "test": ImageSet(np.zeros((100, 28, 28), np.uint8), np.repeat(np.arange(10), 10))}
    first = split_dataset(source, load_config("tiny").split)
    again = split_dataset(source, load_config("tiny").split)
    other = split_dataset(source, load_config("tiny", ["split.seed=1"]).split)
    assert np.array_equal(first["validation"].images, again["validation"].images)
    assert not np.array_equal(first["validation"].images, other["validation"].images)


def test_modified_workspace_data_is_restored_from_the_dvc_cache(tmp_path, data_repo):
    repo = copy_tree(data_repo, tmp_path / "repo")
    labels = repo / "data" / "fashion-mnist" / "test-labels.npy"
    original = labels.read_bytes()
    labels.write_bytes(original[:-1] + b"\x09")
    ensure_pinned_data(repo)
    assert labels.read_bytes() == original


def test_pinned_version_missing_from_workspace_and_cache_is_an_error(tmp_path, data_repo):
    repo = copy_tree(data_repo, tmp_path / "repo")
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "fashion-mnist" / "test-labels.npy").unlink()
    with pytest.raises(DataVersionError, match="not in the workspace nor in the DVC cache"):
        ingest(load_config("tiny", [f"data.repo_dir={repo}"]), tmp_path / "splits")
