import numpy as np

from aimass.evaluation.metrics import Evaluation, score_predictions
from aimass.evaluation.stage import evaluate
from aimass.gates import GateBaselines, decide_gate, majority_baseline
from aimass.config import GateConfig, load_config


def one_hot(predictions, classes=10):
    probabilities = np.full((len(predictions), classes), 0.09 / (classes - 1))
    probabilities[np.arange(len(predictions)), predictions] = 0.91
    return probabilities


TEN = tuple("abcdefghij")
NO_PRODUCTION = GateBaselines(majority_accuracy=0.1)


def evaluation(accuracy, macro_f1):
    return Evaluation(accuracy=accuracy, macro_f1=macro_f1, roc_auc_ovr=0.9, per_class=[], confusion=[])


def test_perfect_predictions_score_one_everywhere():
    labels = np.repeat(np.arange(10), 3)
    result = score_predictions(labels, one_hot(labels), TEN)
    assert (result.accuracy, result.macro_f1, result.roc_auc_ovr) == (1.0, 1.0, 1.0)
    assert np.array_equal(np.diag(result.confusion), np.full(10, 3))


def test_confusion_matrix_rows_are_true_classes():
    labels = np.repeat(np.arange(10), 2)
    predictions = labels.copy()
    predictions[0] = 7  # one true class-0 image predicted as 7
    result = score_predictions(labels, one_hot(predictions), TEN)
    assert result.confusion[0][7] == 1 and result.per_class[0]["recall"] == 0.5


def test_per_class_metrics_carry_the_class_names():
    labels = np.repeat(np.arange(3), 2)
    result = score_predictions(labels, one_hot(labels, classes=3), ("cat", "dog", "fox"))
    assert [row["name"] for row in result.per_class] == ["cat", "dog", "fox"]


def test_two_classes_score_roc_auc_on_the_positive_class():
    labels = np.array([0, 0, 1, 1])
    assert score_predictions(labels, one_hot(labels, classes=2), ("no", "yes")).roc_auc_ovr == 1.0


def test_the_majority_baseline_answers_trains_most_common_class_on_the_test_split():
    assert majority_baseline(np.array([2, 2, 2, 0]), np.array([2, 0, 0, 1])) == 0.25


def test_by_default_the_gate_asks_to_avoid_half_the_majority_baselines_errors():
    gate = GateConfig()
    assert decide_gate(evaluation(0.56, 0.5), gate, NO_PRODUCTION).passed  # 0.1 + 0.5 * 0.9 = 0.55
    rejected = decide_gate(evaluation(0.54, 0.5), gate, NO_PRODUCTION)
    assert not rejected.passed
    assert rejected.reasons[0] == ("accuracy (majority-class baseline 0.1000, 50% of its errors avoided): 0.5400 is "
                                   "below the minimum 0.5500")


def test_a_model_worse_than_production_on_the_same_test_split_is_rejected():
    baselines = GateBaselines(majority_accuracy=0.5, production=("v3", 0.93))
    decision = decide_gate(evaluation(0.91, 0.9), GateConfig(max_regression=0.01), baselines)
    assert not decision.passed
    assert decision.reasons[0].startswith("accuracy (production v3 scores 0.9300 on this test split, 0.0100 "
                                          "regression allowed): 0.9100 is below the minimum 0.9200")


def test_the_data_cards_recommended_minimums_apply_unless_the_config_sets_its_own():
    recommended = {"min_accuracy": 0.88, "min_macro_f1": 0.87}
    assert not decide_gate(evaluation(0.85, 0.9), GateConfig(), NO_PRODUCTION, recommended).passed
    assert decide_gate(evaluation(0.85, 0.9), GateConfig(min_accuracy=0.8), NO_PRODUCTION, recommended).passed


def test_gate_rejects_and_lists_every_broken_threshold_first():
    decision = decide_gate(evaluation(0.80, 0.70), GateConfig(min_accuracy=0.9, min_macro_f1=0.85), NO_PRODUCTION)
    assert not decision.passed
    assert decision.reasons[:2] == ["accuracy (gate): 0.8000 is below the minimum 0.9000",
                                    "macro_f1 (gate): 0.7000 is below the minimum 0.8500"]


def test_a_model_at_exactly_the_threshold_passes():
    assert decide_gate(evaluation(0.9, 0.9), GateConfig(min_accuracy=0.9, min_macro_f1=0.9), NO_PRODUCTION).passed


def test_evaluate_scores_the_chosen_model_and_explains_the_choice(tiny_teacher, tiny_splits_dir, tmp_path):
    from aimass.compression.stage import compress

    # A repository of its own: the shared one's registry holds whatever the session's DAG runs deployed, and a
    # production model there would be a baseline this test does not mean to compare with.
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", "compress.methods=[quantize_int8]",
                                  "gate.min_size_ratio=3", "gate.max_latency_ratio=100"])
    compress(config, tiny_teacher[0], tiny_splits_dir, tmp_path / "candidates")
    outcome = evaluate(config, tiny_teacher[0], tmp_path / "candidates", tiny_splits_dir)
    assert outcome.choice.chosen == "quantize_int8"
    assert 0.5 < outcome.evaluation.accuracy <= 1 and sum(map(sum, outcome.evaluation.confusion)) == 1_000
    assert outcome.markdown().startswith("# Evaluation gate PASSED: quantize_int8")
    assert "**quantize_int8**: chosen (smallest qualifying)" in outcome.markdown()
    assert f"data_md5 `{'d' * 32}.dir`" in outcome.markdown()


def test_evaluate_measures_the_chosen_model_under_every_corruption_and_its_calibration(tiny_teacher, tiny_splits_dir,
                                                                                     tmp_path):
    from aimass.compression.stage import compress

    config = load_config("tiny", [f"data.repo_dir={tmp_path}", "compress.methods=[quantize_int8]",
                                  "evaluate.corruptions=[gaussian_noise,jpeg]", "evaluate.severities=[1,5]"])
    compress(config, tiny_teacher[0], tiny_splits_dir, tmp_path / "candidates")
    outcome = evaluate(config, tiny_teacher[0], tmp_path / "candidates", tiny_splits_dir)
    evaluation = outcome.evaluation
    assert set(evaluation.corruptions) == {"gaussian_noise", "jpeg"}
    assert all(set(by_severity) == {1, 5} for by_severity in evaluation.corruptions.values())
    assert evaluation.corruption_accuracy < evaluation.accuracy
    assert 0 <= evaluation.calibration_error <= 1
    assert {"corruption_accuracy", "calibration_error"} <= set(evaluation.headline())
    report = outcome.markdown()
    assert f"## Robustness: accuracy under corruptions, mean {evaluation.corruption_accuracy:.4f}" in report
    assert f"Expected calibration error: {evaluation.calibration_error:.4f}" in report
    teacher, candidate = outcome.profiles
    assert teacher.corruption_accuracy is not None and teacher.calibration_error is not None
    assert "val. accuracy under corruptions" in report
