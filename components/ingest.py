"""ingest: materialise the data version pinned by data.dvc as train/validation/test splits.

The splits are stratified by class with a fixed seed, so the same data version and config always give the same
split, and the DVC md5 of the data travels with them.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kfp.dsl import Dataset, Output
from sklearn.model_selection import train_test_split

from aimass.config import AimassConfig, SplitConfig
from aimass.data_version import ensure_pinned_data, fetch_data_version
from aimass.dataset import ImageSet, load_image_sets, save_image_sets
from aimass.errors import DataVersionError
from aimass.components.base import project_component


@dataclass(frozen=True)
class IngestResult:
    data_md5: str
    counts: dict[str, int]


def stratified_sample(image_set: ImageSet, size: int | float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split `image_set` into (sample, rest) keeping class proportions; `size` is a count or a fraction."""
    if isinstance(size, int) and size >= len(image_set):
        return image_set, image_set.take(np.array([], dtype=np.int64))
    indices = np.arange(len(image_set))
    try:
        sample, rest = train_test_split(indices, train_size=size, stratify=image_set.labels, random_state=seed)
    except ValueError as error:  # a class too rare to stratify: let data validation judge the labels instead
        raise DataVersionError(f"cannot split the data set by class: {error}") from error
    return image_set.take(np.sort(sample)), image_set.take(np.sort(rest))


def split_dataset(source: dict[str, ImageSet], config: SplitConfig) -> dict[str, ImageSet]:
    train_pool = source["train"]
    if config.train_limit is not None:
        train_pool, _ = stratified_sample(train_pool, config.train_limit, config.seed)
    validation, train = stratified_sample(train_pool, config.validation_fraction, config.seed)
    test = source["test"]
    if config.test_limit is not None:
        test, _ = stratified_sample(test, config.test_limit, config.seed)
    return {"train": train, "validation": validation, "test": test}


def ingest(config: AimassConfig, output_dir: Path, data_version: str | None = None) -> IngestResult:
    """Write the splits of a data version into `output_dir`: the one data.dvc in `data.repo_dir` pins, or
    `data_version` (a DVC md5, what data.dvc pins at the run's commit) pulled from the DVC remote.

    Raises:
        DataVersionError: the version cannot be materialised (not in the workspace, cache or remote).
    """
    if data_version:
        with tempfile.TemporaryDirectory(prefix="aimass-data-") as scratch:
            repo_dir = fetch_data_version(Path(scratch), data_version, config.data)
            return _write_splits(config, repo_dir, data_version, output_dir)
    repo_dir = Path(config.data.repo_dir)
    return _write_splits(config, repo_dir, ensure_pinned_data(repo_dir, config.data.dvc_file), output_dir)


def _write_splits(config: AimassConfig, repo_dir: Path, data_md5: str, output_dir: Path) -> IngestResult:
    source, source_manifest = load_image_sets(repo_dir / config.data.dataset_dir)
    splits = split_dataset(source, config.split)
    metadata = {"data_md5": data_md5, "dataset": source_manifest.get("name", "unknown"), "split": config.split.model_dump()}
    manifest = save_image_sets(output_dir, splits, metadata)
    return IngestResult(data_md5=data_md5, counts=manifest["splits"])


@project_component
def ingest_component(config_json: str, data_version: str, splits: Output[Dataset]):
    """Materialise the pinned data version as a KFP Dataset of train/validation/test splits.

    Args:
        config_json: the resolved AimassConfig as JSON.
        data_version: the DVC md5 data.dvc pins at the run's commit, pulled from data.remote_url; empty: the
            version data.dvc in data.repo_dir pins (local runs).
        splits: output directory of .npy splits with a sha256 manifest; metadata carries `data_md5` and counts.
    """
    from pathlib import Path

    from aimass.config import AimassConfig
    from aimass.components.ingest import ingest

    result = ingest(AimassConfig.from_json(config_json), Path(splits.path), data_version or None)
    splits.metadata.update({"data_md5": result.data_md5, **{f"count_{k}": v for k, v in result.counts.items()}})
