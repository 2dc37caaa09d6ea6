"""deploy: the KFP wrapper of aimass/deployment/stage.py's `deploy` (push, release, smoke test or canary, promote or
undo)."""
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from aimass.components.base import project_component


@project_component
def deploy_component(config_json: str, blessed: Input[Model], splits: Input[Dataset], gate_metrics: Input[Metrics],
                     run_id: str, run_name: str, smoke_metrics: Output[Metrics], report: Output[Markdown]):
    """Push the blessed model to the registry, release it, smoke-test the served model, roll back on failure.

    Args:
        config_json: the resolved AimassConfig as JSON (registry.*, release.*, serving.*).
        blessed: the gate-approved model from bless_model.
        splits: the ingest output; the smoke test sends images of `test`.
        gate_metrics: evaluate's metrics of the blessed model, recorded with the registry version.
        run_id: the pipeline run, recorded as what triggered the release.
        run_name: the pipeline run's name.
        smoke_metrics: the served model's smoke-test accuracy, the version and the release revision.
        report: what was deployed where, with the served model's first answers, as Markdown.
    """
    from pathlib import Path

    from aimass.deployment.stage import deploy
    from aimass.config import AimassConfig

    scalars = {key: float(value) for key, value in gate_metrics.metadata.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    outcome = deploy(AimassConfig.from_json(config_json), Path(blessed.path), Path(splits.path), scalars,
                     triggered_by=f"pipeline run {run_name} ({run_id})")
    if outcome.smoke is not None:
        smoke_metrics.log_metric("smoke_test_accuracy", outcome.smoke.accuracy)
        smoke_metrics.log_metric("smoke_test_images", outcome.smoke.images)
    if outcome.revision is not None:
        smoke_metrics.log_metric("release_revision", outcome.revision.revision)
    smoke_metrics.metadata["model_version"] = outcome.model_version
    smoke_metrics.metadata["deploy_strategy"] = AimassConfig.from_json(config_json).deploy.strategy
    Path(report.path).write_text(outcome.markdown())
