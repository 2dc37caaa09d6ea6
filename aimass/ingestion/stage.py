"""The ingest stage's work: the data version pinned by data.dvc, decoded once and split into train/validation/test.

The images are decoded through the shared preprocessing (aimass/data/decoding.py, cached by data version and
settings); splits the source lacks are drawn from its train split, stratified by class with a fixed seed, so the same
data version and config always give the same splits. Alongside the arrays go the data set's card (classes, input
spec, how each split was made), per-image statistics and each split's profile, which validation and the model card
use. Every array is written and later read a chunk at a time.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.config import AimassConfig
from aimass.data.arrays import distribute_rows, iter_row_chunks
from aimass.data.card import SPLITS, DataCard, SplitsCard
from aimass.data.decoding import decode_data_version, decoded_input_spec
from aimass.data.profile import PROFILE_FILE, image_statistics, profile_split
from aimass.data.splits import plan_splits
from aimass.data.versions import ensure_pinned_data, fetch_data_version
from aimass.integrity import write_manifest
from aimass.models.checkpoint import model_preprocessing


@dataclass(frozen=True)
class IngestResult:
    data_md5: str
    dataset_name: str
    counts: dict[str, int]


def ingest(config: AimassConfig, output_dir: Path, data_version: str | None = None) -> IngestResult:
    """Write the splits of a data version into `output_dir`: the one data.dvc in `data.repo_dir` pins, or
    `data_version` (a DVC md5, what data.dvc pins at the run's commit) pulled from the DVC remote.

    Raises:
        DataVersionError: the version cannot be materialised (not in the workspace, cache or remote), or it cannot
            be split by class.
    """
    if data_version:
        with tempfile.TemporaryDirectory(prefix="aimass-data-") as scratch:
            repo_dir = fetch_data_version(Path(scratch), data_version, config.data)
            return _write_splits(config, repo_dir, data_version, output_dir, Path(scratch) / "decoded")
    repo_dir = Path(config.data.repo_dir)
    md5 = ensure_pinned_data(repo_dir, config.data.dvc_file)
    return _write_splits(config, repo_dir, md5, output_dir, repo_dir / config.data.cache_dir)


def _write_splits(config: AimassConfig, repo_dir: Path, data_md5: str, output_dir: Path,
                  cache_root: Path) -> IngestResult:
    data_dir = repo_dir / config.data.dataset_dir
    card = DataCard.read(data_dir)
    decoded = decode_data_version(data_dir, data_md5, config.data, cache_root, model_preprocessing(config.model))
    source_labels = {split: np.load(decoded / f"{split}-labels.npy") for split in card.splits}
    plan = plan_splits(source_labels, config.split)
    output_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted({source for source, _ in plan.rows.values()}):
        distribute_rows(decoded / f"{source}-images.npy", {output_dir / f"{split}-images.npy": rows
                                                           for split, (origin, rows) in plan.rows.items()
                                                           if origin == source})
    for split, (source, rows) in plan.rows.items():
        np.save(output_dir / f"{split}-labels.npy", source_labels[source][rows])
        np.save(output_dir / f"{split}-sources.npy", np.load(decoded / f"{source}-sources.npy")[rows])
        np.save(output_dir / f"{split}-names.npy", np.load(decoded / f"{source}-names.npy")[rows])
    counts = {split: len(rows) for split, (_, rows) in plan.rows.items()}
    SplitsCard(name=card.name, class_names=card.class_names, input_spec=decoded_input_spec(decoded).to_dict(),
               data_md5=data_md5, counts=counts, drawn=plan.drawn, recommended_gate=card.recommended_gate,
               quarantined=len(card.quarantined), ignored_files=card.ignored_files).write(output_dir)
    describe_splits(output_dir, card.class_names)
    write_manifest(output_dir, {"data_md5": data_md5, "dataset": card.name, "split": config.split.model_dump(),
                                "splits": counts})
    return IngestResult(data_md5=data_md5, dataset_name=card.name, counts=counts)


def describe_splits(splits_dir: Path, class_names: tuple[str, ...]) -> None:
    """Per-image statistics (`<split>-statistics.npz`) and every split's profile (`profile.json`, bins cut at
    train's deciles) of the arrays in `splits_dir`, for validation and for the model card's drift baseline."""
    profiles: dict[str, dict] = {}
    for split in SPLITS:
        statistics = image_statistics(iter_row_chunks(splits_dir / f"{split}-images.npy"),
                                      np.load(splits_dir / f"{split}-sources.npy"))
        np.savez(splits_dir / f"{split}-statistics.npz", **statistics)
        profiles[split] = profile_split(statistics, np.load(splits_dir / f"{split}-labels.npy"), class_names,
                                        reference=profiles.get("train"))
    (splits_dir / PROFILE_FILE).write_text(json.dumps(profiles, indent=1, sort_keys=True) + "\n")
