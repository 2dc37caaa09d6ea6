"""hpo: the hyper-parameter search before the final training, as rounds of trials fanned out with dsl.ParallelFor.

Each round: `hpo_plan` asks the strategy for up to `hpo.parallelism` parameter sets (grid: every combination, in one
round; random and TPE through Optuna's samplers, told every earlier trial), `hpo_trial` trains each for
`hpo.trial_epochs` on the train split and scores it by its best validation accuracy, and `hpo_record` adds the
round's results (gathered with dsl.Collected) to the history. Trials of later rounds are pruned when their
validation accuracy at an epoch falls below the median of earlier trials at that epoch (Optuna's MedianPruner).
`hpo_select` picks the best trial and reports every trial as a Markdown table and a plot; the train step trains on
the chosen parameters, and the model's lineage records them.
"""
from typing import List

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from aimass.components.base import project_component

# The search itself (strategies, trials, the choice) is aimass/training/hpo.py; these are its KFP wrappers.

# ---- the KFP components ----

@project_component
def hpo_plan_component(config_json: str, history_json: str) -> List[str]:
    """Ask the search strategy for the next round's trials.

    Args:
        config_json: the resolved AimassConfig as JSON (hpo.*).
        history_json: every earlier trial's result, as JSON.

    Returns:
        One JSON object per trial: {"number", "params"}.
    """
    import json

    from aimass.training.hpo import history_from_json, plan_round
    from aimass.config import AimassConfig

    config = AimassConfig.from_json(config_json)
    return [json.dumps(trial) for trial in plan_round(config.hpo, history_from_json(history_json))]


@project_component
def hpo_trial_component(config_json: str, splits: Input[Dataset], training_set: Input[Dataset], trial_json: str,
                        history_json: str) -> str:
    """Train one trial briefly and score it by validation accuracy (pruned early when clearly worse).

    Returns:
        The trial's result as JSON.
    """
    import json
    import logging
    from dataclasses import asdict
    from pathlib import Path

    from aimass.training.hpo import history_from_json, run_trial
    from aimass.config import AimassConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    trial = json.loads(trial_json)
    result = run_trial(AimassConfig.from_json(config_json), Path(splits.path), Path(training_set.path),
                       trial["number"], trial["params"], history_from_json(history_json))
    return json.dumps(asdict(result))


@project_component
def hpo_record_component(history_json: str, results: List[str]) -> str:
    """Add one round's trial results (gathered with dsl.Collected) to the history, in trial order."""
    import json

    from aimass.training.hpo import TrialResult, history_from_json, history_to_json

    added = sorted((TrialResult(**json.loads(result)) for result in results), key=lambda trial: trial.number)
    return history_to_json(history_from_json(history_json) + added)


@project_component
def hpo_select_component(config_json: str, history_json: str, trials: Output[Markdown], plot: Output[HTML],
                         metrics: Output[Metrics]) -> str:
    """Choose the best trial; report every trial as a table and a plot.

    Returns:
        The chosen parameters as JSON (dotted keys), for the train step.
    """
    import json
    from pathlib import Path

    from aimass.training.hpo import best_trial, history_from_json, trials_html, trials_markdown
    from aimass.config import AimassConfig

    config = AimassConfig.from_json(config_json)
    history = history_from_json(history_json)
    best = best_trial(history)
    Path(trials.path).write_text(trials_markdown(history, best, config.hpo.strategy))
    Path(plot.path).write_text(trials_html(history, best))
    metrics.log_metric("best_validation_accuracy", best.value)
    metrics.log_metric("trials", len(history))
    metrics.log_metric("pruned_trials", sum(trial.state == "pruned" for trial in history))
    return json.dumps(best.params, sort_keys=True)
