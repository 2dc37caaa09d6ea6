"""ingest: the KFP wrapper of aimass/ingestion/stage.py's `ingest` (splits are planned in aimass/data/splits.py)."""
from kfp.dsl import Dataset, Output

from aimass.components.base import project_component


@project_component
def ingest_component(config_json: str, data_version: str, splits: Output[Dataset]):
    """Decode the pinned data version and split it into a KFP Dataset of train/validation/test.

    Args:
        config_json: the resolved AimassConfig as JSON.
        data_version: the DVC md5 data.dvc pins at the run's commit, pulled from data.remote_url; empty: the
            version data.dvc in data.repo_dir pins (local runs).
        splits: .npy arrays per split, per-image statistics, profiles and the data set's card, under a sha256
            manifest; metadata carries `data_md5`, the data set's name and counts.
    """
    from pathlib import Path

    from aimass.ingestion.stage import ingest
    from aimass.config import AimassConfig

    result = ingest(AimassConfig.from_json(config_json), Path(splits.path), data_version or None)
    splits.metadata.update({"data_md5": result.data_md5, "dataset": result.dataset_name,
                            **{f"count_{k}": v for k, v in result.counts.items()}})
