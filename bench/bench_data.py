"""The splits the benchmarks measure on: the pinned data version through the pipeline's own ingest (its decoded
cache makes a second call cheap), into build/bench-splits/<profile>."""
from pathlib import Path

from aimass.ingestion.stage import ingest
from aimass.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def ingested_splits(profile: str = "quick") -> Path:
    """Run `aimass data import` first (make bench does)."""
    target = REPO_ROOT / "build" / "bench-splits" / profile
    ingest(load_config(profile, [f"data.repo_dir={REPO_ROOT}"]), target)
    return target
