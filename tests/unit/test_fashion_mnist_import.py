import gzip
import shutil
import struct

import numpy as np
import pytest
import yaml

from aimass.data_version import pinned_data_md5, track_data
from aimass.dataset import load_image_sets
from aimass.errors import DataImportError
from aimass.fashion_mnist import import_fashion_mnist
from conftest import REPO_ROOT, init_dvc_repo


@pytest.fixture
def source_copy(tmp_path, fashion_mnist_source):
    copy = tmp_path / "source"
    shutil.copytree(fashion_mnist_source, copy)
    return copy


def write_idx(path, magic, dims, payload):
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(f">I{len(dims)}I", magic, *dims) + payload)


def test_import_reads_all_splits_with_their_labels(data_repo):
    image_sets, manifest = load_image_sets(data_repo / "data" / "fashion-mnist")
    assert manifest["splits"] == {"train": 60_000, "test": 10_000}
    assert image_sets["train"].images.shape == (60_000, 28, 28) and image_sets["train"].images.dtype == np.uint8
    assert sorted(np.unique(image_sets["test"].labels)) == list(range(10))


def test_importing_the_same_files_again_gives_the_dvc_hash_committed_in_data_dvc(tmp_path, fashion_mnist_source):
    repo = init_dvc_repo(tmp_path / "repo")
    import_fashion_mnist(fashion_mnist_source, repo / "data" / "fashion-mnist")
    committed = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    assert track_data(repo) == committed


def test_missing_file_is_named(source_copy, tmp_path):
    (source_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataImportError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        import_fashion_mnist(source_copy, tmp_path / "out")


def test_truncated_gzip_is_named(source_copy, tmp_path):
    path = source_copy / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataImportError, match="train-images-idx3-ubyte.gz: not a readable gzip file"):
        import_fashion_mnist(source_copy, tmp_path / "out")


def test_wrong_magic_number_is_named(source_copy, tmp_path):
    write_idx(source_copy / "t10k-images-idx3-ubyte.gz", 2049, (10_000, 28, 28), bytes(10_000 * 784))
    with pytest.raises(DataImportError, match="t10k-images-idx3-ubyte.gz: wrong magic number 2049, expected 2051"):
        import_fashion_mnist(source_copy, tmp_path / "out")


def test_short_payload_is_reported_as_truncated(source_copy, tmp_path):
    write_idx(source_copy / "t10k-labels-idx1-ubyte.gz", 2049, (10_000,), bytes(9_000))
    with pytest.raises(DataImportError, match="9000 bytes of data, expected 10000"):
        import_fashion_mnist(source_copy, tmp_path / "out")


def test_unexpected_image_count_is_reported(source_copy, tmp_path):
    write_idx(source_copy / "t10k-labels-idx1-ubyte.gz", 2049, (9_999,), bytes(9_999))
    with pytest.raises(DataImportError, match=r"shape \(9999,\), expected \(10000,\)"):
        import_fashion_mnist(source_copy, tmp_path / "out")


def test_failed_import_leaves_the_previous_data_untouched(source_copy, tmp_path):
    target = tmp_path / "data" / "fashion-mnist"
    import_fashion_mnist(source_copy, target)
    before = {path.name: path.read_bytes() for path in target.iterdir()}
    (source_copy / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataImportError):
        import_fashion_mnist(source_copy, target)
    assert {path.name: path.read_bytes() for path in target.iterdir()} == before
    assert [path.name for path in target.parent.iterdir()] == ["fashion-mnist"]  # no staging leftovers


def test_pinned_md5_without_data_dvc_says_how_to_create_it(tmp_path):
    from aimass.errors import DataVersionError

    with pytest.raises(DataVersionError, match="aimass data import"):
        pinned_data_md5(tmp_path)
