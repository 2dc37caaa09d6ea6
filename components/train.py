"""train: the KFP wrapper of aimass/training/stage.py's `train` (the fit loop, devices, fast path and ranks live in
aimass/training/)."""
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from aimass.components.base import project_component


@project_component
def train_component(config_json: str, splits: Input[Dataset], training_set: Input[Dataset], git_commit: str,
                    run_id: str, run_name: str, hyperparameters_json: str, model: Output[Model],
                    metrics: Output[Metrics], curves: Output[HTML], trigger: str = "manual",
                    trigger_reason: str = ""):
    """Train the classifier; early stopping on validation accuracy restores the best epoch's weights.

    Args:
        config_json: the resolved AimassConfig as JSON.
        splits: the ingest output (already validated); its validation split drives early stopping.
        training_set: the augment output, trained on.
        git_commit: commit of the pipeline code, recorded in the model's lineage.
        run_id: KFP pipeline job id, recorded in the lineage.
        run_name: KFP pipeline job name, recorded in the lineage.
        hyperparameters_json: what the hyper-parameter search chose (dotted keys), applied over the config; "{}"
            when no search ran.
        trigger: what started the run (manual, schedule, git, monitor), recorded in the lineage.
        trigger_reason: why, for a run the monitor started (the breach), recorded in the lineage.
        model: safetensors weights + model.json card + sha256 manifest.
        metrics: losses, accuracies, epochs and training images/s.
        curves: loss and accuracy per epoch as an HTML page.
    """
    import logging
    import sys
    from pathlib import Path

    import json

    from aimass.training.curves import training_curves_html
    from aimass.training.hpo import apply_hyperparameters
    from aimass.training.stage import train
    from aimass.config import AimassConfig
    from aimass.lineage import Lineage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = json.loads(hyperparameters_json or "{}")
    config = apply_hyperparameters(AimassConfig.from_json(config_json), chosen)
    lineage = Lineage(data_md5=splits.metadata["data_md5"], git_commit=git_commit, run_id=run_id, run_name=run_name,
                      hyperparameters=json.dumps(chosen, sort_keys=True), trigger=trigger,
                      trigger_reason=trigger_reason)
    result = train(config, Path(splits.path), Path(model.path), lineage,
                   training_set_dir=Path(training_set.path), progress=sys.stdout.isatty())
    final = result.history[result.best_epoch - 1]
    model.metadata.update({**lineage.to_dict(), "framework": "pytorch", "format": "safetensors",
                           "validation_accuracy": final.validation_accuracy})
    for name, value in [("train_loss", final.train_loss), ("train_accuracy", final.train_accuracy),
                        ("validation_loss", final.validation_loss),
                        ("validation_accuracy", final.validation_accuracy), ("best_epoch", result.best_epoch),
                        ("epochs_run", result.epochs_run), ("images_per_second", result.images_per_second)]:
        metrics.log_metric(name, value)
    Path(curves.path).write_text(training_curves_html(result.history))
    curves.metadata.update(lineage.to_dict())
