"""compress: the KFP wrapper of aimass/compression/stage.py's `compress` (pruning, int8 and distillation live in
aimass/compression/)."""
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from aimass.components.base import project_component


@project_component
def compress_component(config_json: str, model: Input[Model], splits: Input[Dataset], candidates: Output[Model],
                       metrics: Output[Metrics], report: Output[Markdown]):
    """Build pruned, quantized and distilled candidates and profile each beside the teacher.

    Args:
        config_json: the resolved AimassConfig as JSON (methods and settings under `compress`).
        model: the trained teacher.
        splits: the ingest output (train for fine-tuning and calibration, validation for the profiles).
        candidates: one model directory per candidate plus profiles.json, under one sha256 manifest.
        metrics: accuracy, size, latency and throughput per model.
        report: the side-by-side table as Markdown.
    """
    import logging
    from pathlib import Path

    from aimass.compression.profiles import failures_markdown, profiles_markdown, read_failures
    from aimass.compression.stage import compress
    from aimass.config import AimassConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # each candidate's build time and any failure
    profiles = compress(AimassConfig.from_json(config_json), Path(model.path), Path(splits.path),
                        Path(candidates.path))
    for profile in profiles:
        for field in ("accuracy", "size_bytes", "latency_p50_ms", "latency_p99_ms", "throughput_b64"):
            if getattr(profile, field) is not None:  # not timed: ruled out by its size
                metrics.log_metric(f"{profile.name}_{field}", getattr(profile, field))
    Path(report.path).write_text(profiles_markdown(profiles) + failures_markdown(read_failures(Path(candidates.path))))
    candidates.metadata.update({**model.metadata, "candidates": [p.name for p in profiles[1:]]})
