import numpy as np

from aimass.components.evaluate import Evaluation, decide_gate, evaluate, score_predictions
from aimass.config import GateConfig, load_config


def one_hot(predictions, classes=10):
    probabilities = np.full((len(predictions), classes), 0.01)
    probabilities[np.arange(len(predictions)), predictions] = 0.91
    return probabilities


def evaluation(accuracy, macro_f1):
    return Evaluation(accuracy=accuracy, macro_f1=macro_f1, roc_auc_ovr=0.9, per_class=[], confusion=[])


def test_perfect_predictions_score_one_everywhere():
    labels = np.repeat(np.arange(10), 3)
    result = score_predictions(labels, one_hot(labels))
    assert (result.accuracy, result.macro_f1, result.roc_auc_ovr) == (1.0, 1.0, 1.0)
    assert np.array_equal(np.diag(result.confusion), np.full(10, 3))


def test_confusion_matrix_rows_are_true_classes():
    labels = np.repeat(np.arange(10), 2)
    predictions = labels.copy()
    predictions[0] = 7  # one true class-0 image predicted as 7
    result = score_predictions(labels, one_hot(predictions))
    assert result.confusion[0][7] == 1 and result.per_class[0]["recall"] == 0.5


def test_gate_passes_when_every_threshold_holds():
    decision = decide_gate(evaluation(0.91, 0.90), GateConfig(min_accuracy=0.9, min_macro_f1=0.9))
    assert decision.passed and len(decision.reasons) == 2


def test_gate_rejects_and_lists_every_broken_threshold_first():
    decision = decide_gate(evaluation(0.80, 0.70), GateConfig(min_accuracy=0.9, min_macro_f1=0.85))
    assert not decision.passed
    assert decision.reasons == ["accuracy 0.8000 is below the minimum 0.9000",
                                "macro_f1 0.7000 is below the minimum 0.8500"]


def test_a_model_at_exactly_the_threshold_passes():
    assert decide_gate(evaluation(0.9, 0.9), GateConfig(min_accuracy=0.9, min_macro_f1=0.9)).passed


def test_evaluate_scores_the_chosen_model_and_explains_the_choice(tiny_config, tiny_teacher, tiny_splits_dir,
                                                                  tmp_path):
    from aimass.components.compress import compress

    config = load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", "compress.methods=[quantize_int8]",
                                  "gate.min_size_ratio=3", "gate.max_latency_ratio=100"])
    compress(config, tiny_teacher[0], tiny_splits_dir, tmp_path / "candidates")
    outcome = evaluate(config, tiny_teacher[0], tmp_path / "candidates", tiny_splits_dir)
    assert outcome.choice.chosen == "quantize_int8"
    assert 0.5 < outcome.evaluation.accuracy <= 1 and sum(map(sum, outcome.evaluation.confusion)) == 1_000
    assert outcome.markdown().startswith("# Evaluation gate PASSED: quantize_int8")
    assert "**quantize_int8**: chosen (smallest qualifying)" in outcome.markdown()
    assert f"data_md5 `{'d' * 32}.dir`" in outcome.markdown()
