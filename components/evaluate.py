"""evaluate: choose what to ship among the teacher and its compressed candidates, score it, and decide the gate.

Two pure decisions, each collecting every reason before deciding, so a choice or a rejection explains itself:
    choose_candidate  the smallest compressed candidate within the accuracy-drop, size-ratio and latency limits
                      against the teacher (measured side by side by compress), else the teacher itself
    decide_gate       the chosen model's test metrics against the majority-class baseline, the production model
                      on the same test split and any absolute minimums; the pipeline consumes its `passed` output
                      with dsl.If
"""
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from aimass.models.architecture import Signature, predict_probabilities
from aimass.components.base import project_component
from aimass.components.compress import ModelProfile, profiles_markdown, read_failures, read_profiles
from aimass.config import AimassConfig, GateConfig
from aimass.data.arrays import ImageSet, load_image_sets
from aimass.data.card import SplitsCard
from aimass.models.artifact import load_model
from aimass.models.card import CARD_FORMAT_VERSION, TEACHER, chosen_model_dir
from aimass.reports import markdown_table


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # one line per threshold checked, failed ones first


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    roc_auc_ovr: float  # macro average of one-vs-rest ROC-AUC
    per_class: list[dict]  # name, precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def headline(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "roc_auc_ovr": self.roc_auc_ovr}


def score_predictions(labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> Evaluation:
    """Metrics from true labels (N,) and predicted class probabilities (N, classes)."""
    predictions = probabilities.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    per_class = [
        {"name": class_names[k], "precision": float(precision[k]), "recall": float(recall[k]),
         "f1": float(f1[k]), "support": int(support[k])}
        for k in classes
    ]
    return Evaluation(
        accuracy=float(accuracy_score(labels, predictions)),
        macro_f1=float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        roc_auc_ovr=_roc_auc(labels, probabilities, classes),
        per_class=per_class,
        confusion=confusion_matrix(labels, predictions, labels=classes).tolist(),
    )


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray, classes: list[int]) -> float:
    """Macro one-vs-rest ROC-AUC; NaN when the test split lacks a class (AUC is undefined for it)."""
    if len(np.unique(labels)) < len(classes):
        return float("nan")
    if len(classes) == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes))


@dataclass(frozen=True)
class GateBaselines:
    """What the model is compared with on the same test split."""

    majority_accuracy: float  # always answering the training split's most common class
    production: tuple[str, float] | None = None  # (version, its accuracy) when a comparable production model exists
    production_note: str = ""  # why there is no production comparison, when there is none


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """The test accuracy of always answering the class most common in training."""
    majority = np.bincount(train_labels).argmax()
    return float((test_labels == majority).mean())


def decide_gate(evaluation: Evaluation, gate: GateConfig, baselines: GateBaselines,
                recommended: dict[str, float] | None = None) -> GateDecision:
    """Pass only if every check holds; the reasons list every check, failed ones first.

    Checks: the majority-class baseline's errors cut by `gate.min_error_reduction`; no more than
    `gate.max_regression` below the production model; the absolute minimums set in the config, else those the data
    set's card recommends.
    """
    recommended = recommended or {}
    base = baselines.majority_accuracy
    checks = [(f"accuracy (majority-class baseline {base:.4f}, {gate.min_error_reduction:.0%} of its errors avoided)",
               evaluation.accuracy, base + gate.min_error_reduction * (1 - base))]
    if baselines.production is not None:
        version, accuracy = baselines.production
        checks.append((f"accuracy (production {version} scores {accuracy:.4f} on this test split, "
                       f"{gate.max_regression:.4f} regression allowed)", evaluation.accuracy,
                       accuracy - gate.max_regression))
    for name, value, configured in (("accuracy", evaluation.accuracy, gate.min_accuracy),
                                    ("macro_f1", evaluation.macro_f1, gate.min_macro_f1)):
        minimum = configured if configured is not None else recommended.get(f"min_{name}")
        if minimum is not None:
            source = "gate" if configured is not None else "the data card's recommendation"
            checks.append((f"{name} ({source})", value, minimum))
    failed = [f"{name}: {value:.4f} is below the minimum {minimum:.4f}" for name, value, minimum in checks
              if value < minimum]
    held = [f"{name}: {value:.4f} meets the minimum {minimum:.4f}" for name, value, minimum in checks
            if value >= minimum]
    notes = [baselines.production_note] if baselines.production_note else []
    return GateDecision(passed=not failed, reasons=failed + held + notes)


@dataclass(frozen=True)
class CompressionChoice:
    chosen: str  # "teacher" or a candidate's name
    verdicts: dict[str, list[str]]  # candidate -> why it was rejected, or why it qualified


def choose_candidate(teacher: ModelProfile, candidates: list[ModelProfile], gate: GateConfig,
                     failures: dict[str, str] | None = None) -> CompressionChoice:
    """The smallest candidate that loses at most `max_accuracy_drop`, is at least `min_size_ratio` times smaller
    and whose batch-1 p50 latency is at most `max_latency_ratio` times the teacher's; the teacher if none is."""
    verdicts = {name: [f"failed: {reason}"] for name, reason in (failures or {}).items()}
    qualified = []
    for candidate in candidates:
        drop = teacher.accuracy - candidate.accuracy
        ratio = teacher.size_bytes / candidate.size_bytes
        latency = candidate.latency_p50_ms / teacher.latency_p50_ms if candidate.latency_p50_ms else None
        problems = []
        if drop > gate.max_accuracy_drop:
            problems.append(f"accuracy drop {100 * drop:.2f} points exceeds {100 * gate.max_accuracy_drop:.2f}")
        if ratio < gate.min_size_ratio:
            problems.append(f"only {ratio:.2f}x smaller, needs {gate.min_size_ratio:.2f}x")
        if latency is not None and latency > gate.max_latency_ratio:
            problems.append(f"batch-1 p50 latency {candidate.latency_p50_ms:.3f} ms is {latency:.2f}x the "
                            f"teacher's {teacher.latency_p50_ms:.3f} ms (limit {gate.max_latency_ratio:.2f}x)")
        if problems:
            verdicts[candidate.name] = ["rejected: " + problem for problem in problems]
        else:
            qualified.append(candidate)
            verdicts[candidate.name] = [f"qualifies: {ratio:.2f}x smaller, accuracy drop {100 * drop:.2f} points, "
                                        f"latency {latency:.2f}x the teacher's"]
    if not qualified:
        return CompressionChoice(TEACHER, verdicts)
    chosen = min(qualified, key=lambda candidate: candidate.size_bytes)
    verdicts[chosen.name] = ["chosen (smallest qualifying): " + verdicts[chosen.name][0].removeprefix("qualifies: ")]
    return CompressionChoice(chosen.name, verdicts)


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
    evaluation = score_predictions(test.labels.astype(np.int64), probabilities, signature.class_names)
    data = SplitsCard.read(splits_dir)
    baselines = GateBaselines(majority_baseline(splits["train"].labels, test.labels),
                              *_production_accuracy(config, data.name, signature, test))
    return EvaluationOutcome(evaluation, decide_gate(evaluation, config.gate, baselines, data.recommended_gate),
                             choice, profiles, loaded.card["lineage"])


def _production_accuracy(config: AimassConfig, dataset_name: str, signature: Signature,
                         test: ImageSet) -> tuple[tuple[str, float] | None, str]:
    """The production model's accuracy on this test split, or why it cannot be compared."""
    import tempfile

    from aimass.registry import open_registry, production_card

    registry = open_registry(config, dataset_name)
    found = production_card(registry)
    if found is None:
        return None, f"no production model of {registry.model_name} yet: nothing to compare with"
    record, card = found
    if card.get("format_version") != CARD_FORMAT_VERSION:
        return None, (f"production {record.version} was written by an earlier aimass (model card format "
                      f"{card.get('format_version')}): not comparable, so it is not a baseline")
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
            f"## Test metrics of {outcome.choice.chosen}\n\n{headline}\n## Per class\n\n{per_class}")


@project_component
def evaluate_component(config_json: str, model: Input[Model], candidates: Input[Model], splits: Input[Dataset],
                       metrics: Output[Metrics], classification: Output[ClassificationMetrics],
                       report: Output[Markdown],
                       ) -> NamedTuple("GateOutputs", [("passed", bool), ("reasons", str), ("chosen", str)]):
    """Choose the model to ship (smallest qualifying candidate, else the teacher), evaluate it, decide the gate.

    Args:
        config_json: the resolved AimassConfig as JSON (thresholds under `gate`).
        model: the trained teacher.
        candidates: the compress output (candidates and their side-by-side profiles).
        splits: the ingest output; only `test` is used.
        metrics: the chosen model's accuracy, macro-F1, ROC-AUC and per-class precision/recall.
        classification: the chosen model's confusion matrix, rendered by the Kubeflow UI.
        report: the choice with every candidate's verdict, the gate decision and all metrics, as Markdown.

    Returns:
        passed: whether every gate threshold holds for the chosen model.
        reasons: JSON list of one sentence per threshold.
        chosen: "teacher" or the name of the chosen candidate.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from aimass.components.evaluate import evaluate
    from aimass.config import AimassConfig

    outcome = evaluate(AimassConfig.from_json(config_json), Path(model.path), Path(candidates.path),
                       Path(splits.path))
    evaluation, decision = outcome.evaluation, outcome.decision
    for name, value in evaluation.headline().items():
        metrics.log_metric(name, value)
    for row in evaluation.per_class:
        metrics.log_metric(f"precision_{row['name']}", row["precision"])
        metrics.log_metric(f"recall_{row['name']}", row["recall"])
    classification.log_confusion_matrix([row["name"] for row in evaluation.per_class], evaluation.confusion)
    Path(report.path).write_text(outcome.markdown())
    report.metadata.update({**outcome.lineage, "gate_passed": decision.passed, "chosen": outcome.choice.chosen,
                            "verdicts": outcome.choice.verdicts})
    return namedtuple("GateOutputs", ["passed", "reasons", "chosen"])(
        decision.passed, json.dumps(decision.reasons), outcome.choice.chosen)
