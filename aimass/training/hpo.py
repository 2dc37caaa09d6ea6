"""The hyper-parameter search before the final training, as rounds of trials (components/hpo.py fans them out
with dsl.ParallelFor).

Each round: `plan_round` asks the strategy for up to `hpo.parallelism` parameter sets (grid: every combination, in one
round; random and TPE through Optuna's samplers, told every earlier trial), `run_trial` trains each for
`hpo.trial_epochs` on the train split and scores it by its best validation accuracy, and the round's results join the
history. Trials of later rounds are pruned when their validation accuracy at an epoch falls below the median of
earlier trials at that epoch (Optuna's MedianPruner). `best_trial` picks the winner; the train step trains on its
parameters, and the model's lineage records them.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from aimass.config import AimassConfig, HpoConfig, SearchDimension
from aimass.data.arrays import load_image_sets
from aimass.errors import ConfigError
from aimass.reports import html_page, markdown_table

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class TrialResult:
    number: int
    params: dict[str, Any]
    value: float | None  # best validation accuracy; None for a pruned trial
    curve: list[float]  # validation accuracy after each epoch
    state: str  # "complete" or "pruned"
    seconds: float


# ---- the plan ----

def search_rounds(settings: HpoConfig) -> int:
    """How many rounds the search has: grid runs every point in one round; random and TPE ask in batches."""
    if settings.strategy == "grid":
        return 1
    return math.ceil(settings.trials / settings.parallelism)


def grid_points(space: dict[str, SearchDimension]) -> list[dict[str, Any]]:
    keys = sorted(space)
    return [dict(zip(keys, combination)) for combination in itertools.product(*(space[k].values for k in keys))]


def plan_round(settings: HpoConfig, history: list[TrialResult]) -> list[dict[str, Any]]:
    """The next round's trials as {"number", "params"}: what the strategy asks for, told every earlier trial."""
    if settings.strategy == "grid":
        points = grid_points(settings.space)[len(history):]
        return [{"number": len(history) + i, "params": point} for i, point in enumerate(points)]
    study = _study(settings, history)
    wanted = min(settings.parallelism, settings.trials - len(history))
    asked = [study.ask(_distributions(settings.space)) for _ in range(wanted)]
    return [{"number": len(history) + i, "params": trial.params} for i, trial in enumerate(asked)]


def _sampler(settings: HpoConfig, trials_so_far: int):
    # Each round runs in its own process with a fresh sampler: seeding it by the round's position keeps the search
    # reproducible without re-drawing an earlier round's points.
    seed = settings.seed + trials_so_far
    if settings.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials asked in one batch count as running, so the batch spreads out instead of clustering.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.parallelism, constant_liar=True)


def _study(settings: HpoConfig, history: list[TrialResult]) -> optuna.Study:
    """An in-memory study replaying `history`: every step's decisions depend only on the config and the history,
    so the same seed gives the same search (each round runs in its own process)."""
    study = optuna.create_study(direction="maximize", sampler=_sampler(settings, len(history)),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    distributions = _distributions(settings.space)
    for trial in history:
        study.add_trial(optuna.trial.create_trial(
            params=trial.params, distributions=distributions, value=trial.value,
            intermediate_values=dict(enumerate(trial.curve)),
            state=optuna.trial.TrialState.COMPLETE if trial.state == "complete" else optuna.trial.TrialState.PRUNED))
    return study


def _distributions(space: dict[str, SearchDimension]) -> dict:
    distributions = {}
    for key, dimension in space.items():
        if dimension.values is not None:
            distributions[key] = optuna.distributions.CategoricalDistribution(list(dimension.values))
        elif dimension.integer:
            distributions[key] = optuna.distributions.IntDistribution(int(dimension.low), int(dimension.high),
                                                                      log=dimension.log)
        else:
            distributions[key] = optuna.distributions.FloatDistribution(dimension.low, dimension.high,
                                                                        log=dimension.log)
    return distributions


# ---- a trial ----

def apply_hyperparameters(config: AimassConfig, params: dict[str, Any]) -> AimassConfig:
    """`config` with each dotted key of `params` set (validated like any --set)."""
    settings = config.model_dump(mode="json")
    for key, value in params.items():
        *sections, name = key.split(".")
        node = settings
        for section in sections:
            node = node[section]
        node[name] = value
    return AimassConfig.from_json(json.dumps(settings))


def run_trial(config: AimassConfig, splits_dir: Path, training_set_dir: Path | None, number: int,
              params: dict[str, Any], history: list[TrialResult]) -> TrialResult:
    """Train with `params` for `hpo.trial_epochs` (no early stopping) and score the best validation accuracy;
    with pruning on, stop after an epoch whose accuracy is below the median of earlier trials at that epoch."""
    from aimass.models.architecture import Signature
    from aimass.training.loop import train_classifier
    from aimass.training.stage import training_split
    from aimass.data.card import SplitsCard

    settings = config.hpo
    trial_config = apply_hyperparameters(config, params)
    trial_config = trial_config.model_copy(update={"train": trial_config.train.model_copy(update={
        "steps": None, "epochs": settings.trial_epochs, "early_stopping": False,
        "nproc": 1})})
    study = _study(settings, history)
    study.enqueue_trial(params)
    trial = study.ask(_distributions(settings.space))
    curve: list[float] = []

    def keep_going(record) -> bool:
        curve.append(record.validation_accuracy)
        trial.report(record.validation_accuracy, record.epoch - 1)
        return not (settings.pruning and trial.should_prune())

    splits, _ = load_image_sets(splits_dir)
    train_set = training_split(splits, training_set_dir)
    started = time.perf_counter()
    _, result = train_classifier(trial_config, train_set, splits["validation"],
                                 Signature.of_splits(SplitsCard.read(splits_dir)), on_epoch=keep_going)
    pruned = len(curve) < settings.trial_epochs
    return TrialResult(number=number, params=params, value=None if pruned else result.best_validation_accuracy,
                       curve=curve, state="pruned" if pruned else "complete",
                       seconds=time.perf_counter() - started)


# ---- the choice ----

def best_trial(history: list[TrialResult]) -> TrialResult:
    """The completed trial with the highest validation accuracy (the earliest among equals)."""
    completed = [trial for trial in history if trial.state == "complete"]
    if not completed:
        raise ConfigError("every trial of the hyper-parameter search was pruned or failed: widen hpo.space, "
                          "raise hpo.trial_epochs or turn hpo.pruning off")
    return max(completed, key=lambda trial: (trial.value, -trial.number))


def trials_markdown(history: list[TrialResult], best: TrialResult, strategy: str) -> str:
    keys = sorted(best.params)
    rows = [[t.number, *[t.params[k] for k in keys], "-" if t.value is None else t.value, t.state,
             f"{t.seconds:.1f}", "**best**" if t.number == best.number else ""] for t in history]
    table = markdown_table(["trial", *keys, "validation accuracy", "state", "seconds", ""], rows)
    return (f"# Hyper-parameter search ({strategy}, {len(history)} trials)\n\nChosen: "
            + ", ".join(f"`{k}` = {best.params[k]}" for k in keys)
            + f" (trial {best.number}, validation accuracy {best.value:.4f})\n\n{table}")


def trials_html(history: list[TrialResult], best: TrialResult) -> str:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.6))
    axes = figure.subplots()
    for trial in history:
        colour = "tab:green" if trial.number == best.number else ("tab:grey" if trial.state == "pruned"
                                                                    else "tab:blue")
        axes.plot(range(1, len(trial.curve) + 1), trial.curve, "o-", color=colour, alpha=0.8,
                  label=f"trial {trial.number}" if trial.number == best.number else None)
    axes.set(title="validation accuracy per epoch of each trial (green: chosen, grey: pruned)", xlabel="epoch",
             ylabel="validation accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    return html_page("Hyper-parameter search", figure, f"{len(history)} trials; the chosen one is green.")


def history_from_json(text: str) -> list[TrialResult]:
    return [TrialResult(**entry) for entry in json.loads(text or "[]")]


def history_to_json(history: list[TrialResult]) -> str:
    return json.dumps([asdict(trial) for trial in history])
