"""The evaluate stage's work: choose what to ship among the teacher and its compressed candidates (on validation),
score the choice on the test split, compare it with production on the same split, and apply the gate."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimass.compression.profiles import ModelProfile, profiles_markdown, read_failures, read_profiles
from aimass.config import AimassConfig
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.data.card import SplitsCard
from aimass.evaluation.metrics import Evaluation, score_predictions
from aimass.gates import (CompressionChoice, GateBaselines, GateDecision, choose_candidate, decide_gate,
                          majority_baseline)
from aimass.models.architecture import Signature, predict_probabilities
from aimass.models.artifact import load_model
from aimass.models.card import chosen_model_dir
from aimass.models.robustness import measure_robustness
from aimass.reports import markdown_table


@dataclass(frozen=True)
class EvaluationOutcome:
    evaluation: Evaluation  # of the chosen model
    decision: GateDecision
    choice: CompressionChoice
    profiles: list[ModelProfile]  # teacher first
    lineage: dict[str, str]  # of the chosen model

    def markdown(self) -> str:
        return evaluation_markdown(self)


def evaluate(config: AimassConfig, teacher_dir: Path, candidates_dir: Path, splits_dir: Path) -> EvaluationOutcome:
    """Choose among the teacher and the candidates (on validation), score the choice on the test split (read here
    only) and apply the gate."""
    profiles = read_profiles(candidates_dir)
    choice = choose_candidate(profiles[0], profiles[1:], config.gate, read_failures(candidates_dir))
    splits, _ = load_image_sets(splits_dir)
    test = splits["test"]
    loaded = load_model(chosen_model_dir(teacher_dir, candidates_dir, choice.chosen))
    signature = loaded.signature
    probabilities = predict_probabilities(loaded.module, test.images, signature.input_spec)
    labels = test.labels.astype(np.int64)
    robustness = measure_robustness(loaded.module, signature.input_spec, test.images, labels, config.evaluate,
                                    probabilities)
    evaluation = dataclasses.replace(score_predictions(labels, probabilities, signature.class_names),
                                     corruption_accuracy=robustness.corruption_accuracy,
                                     corruptions=robustness.corruptions,
                                     calibration_error=robustness.calibration_error)
    data = SplitsCard.read(splits_dir)
    baselines = GateBaselines(majority_baseline(splits["train"].labels, test.labels),
                              *_production_accuracy(config, data.name, signature, test))
    return EvaluationOutcome(evaluation, decide_gate(evaluation, config.gate, baselines, data.recommended_gate),
                             choice, profiles, loaded.card.lineage)


def _production_accuracy(config: AimassConfig, dataset_name: str, signature: Signature,
                         test: ImageSet) -> tuple[tuple[str, float] | None, str]:
    """The production model's accuracy on this test split, or why it cannot be compared."""
    import tempfile

    from aimass.registry import open_registry, production_or_why_not

    registry = open_registry(config, dataset_name)
    found, why_not = production_or_why_not(registry)
    if found is None:
        return None, f"{why_not}: nothing to compare with"
    record, card = found
    theirs = Signature.of_model_card(card)
    if (theirs.class_names, theirs.input_spec.shape) != (signature.class_names, signature.input_spec.shape):
        return None, (f"production {record.version} answers other classes or takes other inputs: not comparable, "
                      "so it is not a baseline")
    with tempfile.TemporaryDirectory(prefix="aimass-production-") as folder:
        registry.pull(record.version, Path(folder) / "model")
        production = load_model(Path(folder) / "model")
        predictions = predict_probabilities(production.module, test.images, theirs.input_spec).argmax(axis=1)
    return (record.version, float((predictions == test.labels).mean())), ""


def evaluation_markdown(outcome: EvaluationOutcome) -> str:
    evaluation, decision = outcome.evaluation, outcome.decision
    verdict = "PASSED" if decision.passed else "REJECTED"
    provenance = ", ".join(f"{key} `{value}`" for key, value in sorted(outcome.lineage.items()))
    choice = "\n".join(f"- **{name}**: " + "; ".join(reasons) for name, reasons in outcome.choice.verdicts.items())
    headline = markdown_table(["metric", "value"], list(evaluation.headline().items()))
    per_class = markdown_table(["class", "precision", "recall", "f1", "support"],
                               [tuple(row.values()) for row in evaluation.per_class])
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons)
    return (f"# Evaluation gate {verdict}: {outcome.choice.chosen}\n\n{reasons}\n\nModel lineage: {provenance}\n\n"
            f"## Compression choice: {outcome.choice.chosen}\n\n{choice}\n\n"
            f"{profiles_markdown(outcome.profiles).replace('# Compression candidates', '### Side by side')}\n"
            f"## Test metrics of {outcome.choice.chosen}\n\n{headline}\n{robustness_markdown(evaluation)}"
            f"## Per class\n\n{per_class}")


def robustness_markdown(evaluation: Evaluation) -> str:
    """Accuracy per corruption and severity, and the calibration error, or a line saying they were not measured."""
    calibration = (f"Expected calibration error: {evaluation.calibration_error:.4f} (0: confidence matches accuracy)."
                   if evaluation.calibration_error == evaluation.calibration_error else "")
    if not evaluation.corruptions:
        return f"## Robustness\n\nNo corruption measured (evaluate.corruptions is empty). {calibration}\n\n"
    severities = sorted({severity for by_severity in evaluation.corruptions.values() for severity in by_severity})
    rows = [(name, *(f"{by_severity[severity]:.4f}" for severity in severities))
            for name, by_severity in evaluation.corruptions.items()]
    table = markdown_table(["corruption", *(f"severity {severity}" for severity in severities)], rows)
    return (f"## Robustness: accuracy under corruptions, mean {evaluation.corruption_accuracy:.4f}\n\n{table}\n"
            f"{calibration}\n\n")
