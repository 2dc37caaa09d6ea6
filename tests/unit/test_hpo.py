"""The hyper-parameter search's plan, trials and choice, without KFP (the whole DAG with the search runs in
tests/integration/test_pipeline_local.py)."""
import pytest

from aimass.training.hpo import (TrialResult, best_trial, grid_points, plan_round, run_trial, search_rounds,
                                   trials_markdown)
from aimass.config import load_config
from aimass.errors import ConfigError


def hpo(*overrides):
    return load_config("tiny", list(overrides)).hpo


def test_a_grid_is_every_combination_in_one_round():
    settings = hpo()
    assert search_rounds(settings) == 1
    assert grid_points(settings.space) == [
        {"model.dropout": 0.0, "train.learning_rate": 0.001}, {"model.dropout": 0.0, "train.learning_rate": 0.05},
        {"model.dropout": 0.2, "train.learning_rate": 0.001}, {"model.dropout": 0.2, "train.learning_rate": 0.05}]
    assert [trial["number"] for trial in plan_round(settings, [])] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_2x2_grid_on_tiny_picks_the_trial_with_the_best_validation_accuracy(tiny_config, tiny_splits_dir):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}"])
    history = [run_trial(config, tiny_splits_dir, None, trial["number"], trial["params"], [])
               for trial in plan_round(config.hpo, [])]
    assert all(trial.state == "complete" and 0 < trial.value <= 1 for trial in history)
    assert best_trial(history).value == max(trial.value for trial in history)
    # one epoch at a peak learning rate of 0.001 barely moves the weights: the search must see 0.05 is better
    assert best_trial(history).params["train.learning_rate"] == 0.05, [(t.params, t.value) for t in history]


TPE = ("hpo.strategy=tpe", "hpo.trials=6", "hpo.parallelism=3", "hpo.seed=7",
       "hpo.space={train.learning_rate: {low: 0.01, high: 0.3, log: true}, model.dropout: {low: 0.0, high: 0.3}}")


def scored(plan, value_of):
    return [TrialResult(t["number"], t["params"], value_of(t["params"]), [value_of(t["params"])], "complete", 1.0)
            for t in plan]


def tpe_search(*overrides):
    settings, history = hpo(*TPE, *overrides), []
    for _ in range(search_rounds(settings)):
        history += scored(plan_round(settings, history), lambda p: 1 - abs(p["train.learning_rate"] - 0.1))
    return history


def test_a_bayesian_search_asks_in_batches_and_is_reproducible_for_a_seed():
    first, again = tpe_search(), tpe_search()
    assert [t.params for t in first] == [t.params for t in again] and len(first) == 6
    assert len({tuple(sorted(t.params.items())) for t in first}) == 6  # no point asked twice
    assert [t.params for t in tpe_search("hpo.seed=8")] != [t.params for t in first]


def test_random_rounds_do_not_redraw_earlier_points():
    settings = hpo(*TPE, "hpo.strategy=random")
    history = scored(plan_round(settings, []), lambda p: 0.5)
    assert not {tuple(sorted(t["params"].items())) for t in plan_round(settings, history)} & \
        {tuple(sorted(t.params.items())) for t in history}


def test_a_hopeless_trial_is_pruned_against_the_median_of_earlier_ones(tiny_config, tiny_splits_dir):
    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "hpo.trial_epochs=3"])
    good = [TrialResult(n, {"train.learning_rate": 0.05, "model.dropout": 0.0}, 0.99, [0.98, 0.99, 0.99],
                        "complete", 1.0) for n in range(3)]
    pruned = run_trial(config, tiny_splits_dir, None, 3, {"train.learning_rate": 0.001, "model.dropout": 0.2}, good)
    assert (pruned.state, pruned.value, len(pruned.curve)) == ("pruned", None, 1)


@pytest.mark.parametrize("overrides, problem", [
    (("hpo.space={}",), "hpo.space is empty"),
    (("hpo.space={data.repo_dir: {values: [1]}}",), "'data.repo_dir' cannot be searched"),
    (("hpo.space={train.epochs: {values: [1, 2]}}",), "'train.epochs' cannot be searched"),
    (("hpo.space={train.learning_rate: {low: 0.3, high: 0.1}}", "hpo.strategy=tpe"), "must be below high"),
    (("hpo.space={train.learning_rate: {low: 0, high: 0.1, log: true}}", "hpo.strategy=tpe"), "log-scale"),
    (("hpo.space={train.learning_rate: {low: 0.01, high: 0.1}}",), "grid needs `values` for every key"),
    (("hpo.space={train.learning_rate: {values: [0.1], low: 0.01}}",), "either `values` or `low` and `high`"),
])
def test_an_invalid_search_space_is_refused_when_the_config_loads(overrides, problem):
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(")):
        load_config("tiny", list(overrides))


def test_a_search_whose_every_trial_was_pruned_says_what_to_change():
    pruned = [TrialResult(0, {"x": 1}, None, [0.1], "pruned", 1.0)]
    with pytest.raises(ConfigError, match="every trial of the hyper-parameter search was pruned"):
        best_trial(pruned)


def test_the_trials_table_marks_the_choice():
    history = [TrialResult(0, {"a": 1}, 0.8, [0.8], "complete", 1.0), TrialResult(1, {"a": 2}, 0.9, [0.9],
                                                                                   "complete", 2.0)]
    table = trials_markdown(history, best_trial(history), "grid")
    assert "Chosen: `a` = 2 (trial 1, validation accuracy 0.9000)" in table and "| 1 | 2 | 0.9000 |" in table
