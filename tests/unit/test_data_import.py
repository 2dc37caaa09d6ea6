"""`aimass data import`: every layout people bring, every bad input refused by name, nothing half-imported."""
import gzip
import json
import shutil
import struct

import pytest
import yaml

from aimass.cli import main
from aimass.data.card import DataCard, read_index
from aimass.data.importing import ImportSettings, detect_format, import_dataset
from aimass.data.versions import track_data
from aimass.errors import DataImportError
from conftest import REPO_ROOT, init_dvc_repo, write_digits_folder


def write_idx(path, magic, dims, payload):
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(f">I{len(dims)}I", magic, *dims) + payload)


@pytest.fixture
def idx_copy(tmp_path, fashion_mnist_source):
    return shutil.copytree(fashion_mnist_source, tmp_path / "source")


@pytest.fixture
def folder(tmp_path):
    return write_digits_folder(tmp_path / "digits", count=200)


def write_manifest(path, rows):
    """`rows` (dicts with the same keys) as a CSV or JSONL manifest, by `path`'s suffix."""
    if path.suffix == ".csv":
        columns = list(rows[0])
        path.write_text("\n".join([",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def manifest_with(tmp_path, bad_row):
    """The digits as image files with a metadata.csv listing them all after `bad_row`."""
    root = write_digits_folder(tmp_path / "manifest-source", count=200, layout="uniform")
    write_manifest(root / "metadata.csv", [bad_row] + digit_rows(root))
    return root


def digit_rows(root, split=None):
    rows = []
    for image in sorted(root.rglob("*.png")):
        row = {"file_name": image.relative_to(root).as_posix(), "label": image.parent.name}
        if split:
            row["split"] = split(len(rows))
        rows.append(row)
    return rows


# ---- IDX: the demo ----

def test_fashion_mnist_idx_files_import_with_their_class_names_and_gate(data_repo):
    card = DataCard.read(data_repo / "data")
    assert (card.name, card.source_format, card.splits) == ("fashion-mnist", "idx", {"test": 10_000, "train": 60_000})
    assert card.class_names[0] == "T-shirt/top" and card.recommended_gate == {"min_accuracy": 0.88,
                                                                             "min_macro_f1": 0.87}


def test_importing_the_same_files_again_gives_the_dvc_hash_committed_in_data_dvc(tmp_path, fashion_mnist_source):
    repo = init_dvc_repo(tmp_path / "repo")
    import_dataset(fashion_mnist_source, repo / "data")
    committed = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]["md5"]
    assert track_data(repo) == committed


def test_idx_files_of_another_data_set_get_numbered_classes(idx_copy, tmp_path):
    labels = gzip.open(idx_copy / "train-labels-idx1-ubyte.gz").read()
    write_idx(idx_copy / "train-labels-idx1-ubyte.gz", 2049, (60_000,), labels[8:][::-1])  # same labels, reordered
    card = import_dataset(idx_copy, tmp_path / "data")
    assert card.class_names == tuple(str(k) for k in range(10)) and card.recommended_gate == {}
    assert card.name == "source"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "t10k-labels-idx1-ubyte.gz: file not found"),
    (lambda d: (d / "train-images-idx3-ubyte.gz").write_bytes((d / "train-images-idx3-ubyte.gz").read_bytes()[:99_999]),
     "train-images-idx3-ubyte.gz: not a readable gzip file"),
    (lambda d: write_idx(d / "t10k-images-idx3-ubyte.gz", 2049, (10_000, 28, 28), bytes(10_000 * 784)),
     "t10k-images-idx3-ubyte.gz: wrong magic number 2049, expected 2051"),
    (lambda d: write_idx(d / "t10k-images-idx3-ubyte.gz", 2051, (9_000, 28, 28), bytes(9_000 * 784)),
     "holds 9000 images but .*t10k-labels-idx1-ubyte.gz 10000 labels"),
])
def test_a_damaged_idx_file_is_named(idx_copy, tmp_path, damage, message):
    damage(idx_copy)
    with pytest.raises(DataImportError, match=message):
        import_dataset(idx_copy, tmp_path / "data", "idx")


# ---- image folders ----

def test_an_image_folder_imports_its_classes_sorted_with_each_files_size_and_channels(folder, tmp_path):
    card = import_dataset(folder, tmp_path / "data")
    rows = read_index(tmp_path / "data")
    assert (card.source_format, card.name, card.splits) == ("imagefolder", "digits", {"train": 200})
    assert card.class_names == tuple(str(k) for k in range(10))
    assert {(row["width"], row["channels"]) for row in rows} == {(8, 1), (16, 3), (24, 1), (8, 3), (16, 1), (24, 3)}
    first = rows[0]
    assert (tmp_path / "data" / first["file"]).read_bytes() == (folder / first["file"].removeprefix("images/")).read_bytes()


def test_split_folders_are_recognised_by_their_hugging_face_names(tmp_path):
    source = write_digits_folder(tmp_path / "split-source", count=300, split_folders=True)
    (source / "test").rename(source / "Evaluation")
    card = import_dataset(source, tmp_path / "data")
    assert card.splits == {"test": 60, "train": 240}


def test_other_files_are_ignored_and_counted(folder, tmp_path):
    (folder / "0" / "notes.txt").write_text("not an image")
    (folder / "README.md").write_text("about the data")
    card = import_dataset(folder, tmp_path / "data")
    assert card.ignored_files == 2 and card.images == 200


def test_extensions_are_matched_whatever_their_case(folder, tmp_path):
    (folder / "2" / "digit-0002.png").rename(folder / "2" / "UPPER.PNG")
    assert import_dataset(folder, tmp_path / "data").images == 200


# ---- manifests ----

@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_manifest_imports_its_rows_with_their_splits(tmp_path, suffix):
    root = write_digits_folder(tmp_path / "manifest-source", count=200, layout="uniform")
    write_manifest(root / f"metadata{suffix}", digit_rows(root, split=lambda i: "TEST" if i % 4 == 0 else "TRAINING"))
    assert detect_format(root) == "manifest"
    card = import_dataset(root, tmp_path / "data")
    assert card.splits == {"test": 50, "train": 150} and card.source_format == "manifest"


@pytest.mark.parametrize("bad_row, message", [
    ({"file_name": "", "label": "1"}, r"metadata.csv row 2: empty file_name"),
    ({"file_name": "/etc/passwd", "label": "1"}, r"row 2: /etc/passwd is an absolute path"),
    ({"file_name": "../outside.png", "label": "1"}, r"row 2: ../outside.png leaves .* \(through '..'\)"),
    ({"file_name": "1/missing.png", "label": "1"}, r"row 2: 1/missing.png does not exist"),
    ({"file_name": "1/digit-0001.png", "label": ""}, r"row 2: 1/digit-0001.png has an empty label"),
])
def test_a_bad_manifest_row_is_named(tmp_path, bad_row, message):
    root = manifest_with(tmp_path, bad_row)
    with pytest.raises(DataImportError, match=message):
        import_dataset(root, tmp_path / "data")


def test_a_symlink_out_of_the_manifests_folder_is_refused(tmp_path):
    root = manifest_with(tmp_path, {"file_name": "1/link.png", "label": "1"})
    (tmp_path / "secret.png").write_bytes((root / "1" / "digit-0001.png").read_bytes())
    (root / "1" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataImportError, match=r"row 2: 1/link.png is a symlink to .*secret.png, outside"):
        import_dataset(root, tmp_path / "data")


# ---- bad images and bad data sets ----

def test_a_truncated_image_and_a_fake_image_are_named_with_a_count(folder, tmp_path):
    truncated = folder / "2" / "digit-0002.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    (folder / "4" / "fake.jpg").write_text("this is text, not a JPEG")
    with pytest.raises(DataImportError, match=r"2 files are not readable images: .*digit-0002.png: .*fake.jpg: not an "
                                              r"image Pillow can read; .*--skip-bad-images"):
        import_dataset(folder, tmp_path / "data")


def test_skip_bad_images_leaves_them_out_and_lists_them(folder, tmp_path):
    (folder / "4" / "fake.jpg").write_text("not a JPEG")
    card = import_dataset(folder, tmp_path / "data", settings=ImportSettings(skip_bad_images=True))
    assert card.images == 200 and card.quarantined == (str(folder / "4" / "fake.jpg"),)


def test_more_than_ten_bad_files_show_ten_and_a_count(folder, tmp_path):
    for index in range(13):
        (folder / "5" / f"fake-{index:02d}.png").write_text("x")
    with pytest.raises(DataImportError, match=r"13 files are not readable images: .*fake-09.png: [^;]*\(and 3 more\)"):
        import_dataset(folder, tmp_path / "data")


def test_a_class_below_the_minimum_is_named_with_its_count(folder, tmp_path):
    for image in sorted((folder / "7").iterdir())[3:]:
        image.unlink()
    with pytest.raises(DataImportError, match=r"fewer than 10 images \(data.min_images_per_class\): 7 \(3\)"):
        import_dataset(folder, tmp_path / "data")


def test_only_one_class_is_refused(folder, tmp_path):
    for class_dir in folder.iterdir():
        if class_dir.name != "0":
            shutil.rmtree(class_dir)
    with pytest.raises(DataImportError, match="only one class \\(0\\): a classifier needs at least two"):
        import_dataset(folder, tmp_path / "data")


def test_an_empty_split_folder_is_refused(tmp_path):
    source = write_digits_folder(tmp_path / "split-source", count=300, split_folders=True)
    (source / "validation" / "3").mkdir(parents=True)
    with pytest.raises(DataImportError, match=r"empty split: .*validation holds no images"):
        import_dataset(source, tmp_path / "data")


def test_a_missing_source_says_what_to_give(tmp_path):
    with pytest.raises(DataImportError, match="does not exist: give --source a folder of class folders"):
        import_dataset(tmp_path / "nowhere", tmp_path / "data")


# ---- nothing half-imported ----

def test_a_failed_import_leaves_data_and_data_dvc_as_they_were(folder, tmp_path, capsys):
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["data", "import", "--source", str(folder), "--repo", str(repo)]) == 0
    pinned, index = (repo / "data.dvc").read_bytes(), (repo / "data" / "index.jsonl").read_bytes()
    (folder / "6" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["data", "import", "--source", str(folder), "--repo", str(repo)]) == 1
    assert "aimass: error: 1 files are not readable images" in capsys.readouterr().err
    assert (repo / "data.dvc").read_bytes() == pinned and (repo / "data" / "index.jsonl").read_bytes() == index
    assert [p.name for p in repo.iterdir() if p.name.startswith(".data")] == []  # no staging leftovers


def test_the_cli_imports_a_folder_names_the_data_set_and_pins_it(folder, tmp_path, capsys):
    repo = init_dvc_repo(tmp_path / "repo")
    assert main(["data", "import", "--source", str(folder), "--name", "Hand Digits", "--repo", str(repo)]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"imported Hand Digits from {folder} as imagefolder: 10 classes (0, 1, 2")
    assert "data.dvc pins" in output and (repo / "data.dvc").is_file()


def test_dvc_diff_between_two_imported_versions_names_the_images_that_changed(folder, tmp_path):
    import subprocess

    from dvc.repo import Repo

    repo = init_dvc_repo(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]

    def import_and_commit(message):
        assert main(["data", "import", "--source", str(folder), "--repo", str(repo)]) == 0
        subprocess.run([*git, "add", "data.dvc", ".gitignore"], check=True)
        subprocess.run([*git, "commit", "-qm", message], check=True)

    import_and_commit("first version")
    changed = next((folder / "4").glob("*.png"))
    changed.write_bytes(next((folder / "5").glob("*.png")).read_bytes())  # another image under the same name
    next((folder / "6").glob("*.png")).unlink()
    import_and_commit("second version")
    with Repo(str(repo)) as dvc:
        difference = dvc.diff("HEAD~1", "HEAD")
    assert [entry["path"] for entry in difference["modified"] if not entry["path"].endswith(("/", ".json", ".jsonl"))] \
        == [f"data/images/4/{changed.name}"]
    assert [entry["path"] for entry in difference["deleted"]][0].startswith("data/images/6/")
