"""evaluate: score the model on the held-out test split and decide the gate.

The gate is a pure function of the metrics and thresholds, `decide_gate`, collecting every failed threshold before
deciding, so a rejection explains itself completely. The pipeline consumes its `passed` output with dsl.If.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from aimass.architecture import images_to_tensor, predict_logits
from aimass.components.base import project_component
from aimass.config import AimassConfig, GateConfig
from aimass.dataset import CLASS_NAMES, NUM_CLASSES, load_image_sets
from aimass.model_artifact import load_model
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


def score_predictions(labels: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Metrics from true labels (N,) and predicted class probabilities (N, 10)."""
    predictions = probabilities.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0)
    per_class = [
        {"name": CLASS_NAMES[k], "precision": float(precision[k]), "recall": float(recall[k]),
         "f1": float(f1[k]), "support": int(support[k])}
        for k in classes
    ]
    return Evaluation(
        accuracy=float(accuracy_score(labels, predictions)),
        macro_f1=float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        roc_auc_ovr=float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)),
        per_class=per_class,
        confusion=confusion_matrix(labels, predictions, labels=classes).tolist(),
    )


def decide_gate(evaluation: Evaluation, gate: GateConfig) -> GateDecision:
    """Pass only if every threshold holds; the reasons list every check, failed ones first."""
    checks = [
        ("accuracy", evaluation.accuracy, gate.min_accuracy),
        ("macro_f1", evaluation.macro_f1, gate.min_macro_f1),
    ]
    failed = [f"{name} {value:.4f} is below the minimum {minimum:.4f}" for name, value, minimum in checks
              if value < minimum]
    held = [f"{name} {value:.4f} meets the minimum {minimum:.4f}" for name, value, minimum in checks
            if value >= minimum]
    return GateDecision(passed=not failed, reasons=failed + held)


@dataclass(frozen=True)
class EvaluationOutcome:
    evaluation: Evaluation
    decision: GateDecision
    lineage: dict[str, str]  # of the evaluated model

    def markdown(self) -> str:
        return evaluation_markdown(self.evaluation, self.decision, self.lineage)


def evaluate(config: AimassConfig, model_dir: Path, splits_dir: Path) -> EvaluationOutcome:
    """Score the model in `model_dir` on the test split and apply the gate from `config`."""
    import torch

    splits, _ = load_image_sets(splits_dir)
    test = splits["test"]
    loaded = load_model(model_dir)
    probabilities = torch.softmax(predict_logits(loaded.module, images_to_tensor(test.images)), dim=1).numpy()
    evaluation = score_predictions(test.labels.astype(np.int64), probabilities)
    return EvaluationOutcome(evaluation, decide_gate(evaluation, config.gate), loaded.card["lineage"])


def evaluation_markdown(evaluation: Evaluation, decision: GateDecision, lineage: dict[str, str]) -> str:
    verdict = "PASSED" if decision.passed else "REJECTED"
    provenance = ", ".join(f"{key} `{value}`" for key, value in sorted(lineage.items()))
    headline = markdown_table(["metric", "value"], list(evaluation.headline().items()))
    per_class = markdown_table(["class", "precision", "recall", "f1", "support"],
                               [tuple(row.values()) for row in evaluation.per_class])
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons)
    return (f"# Evaluation gate {verdict}\n\n{reasons}\n\nModel lineage: {provenance}\n\n"
            f"## Test metrics\n\n{headline}\n## Per class\n\n{per_class}")


@project_component
def evaluate_component(config_json: str, model: Input[Model], splits: Input[Dataset], metrics: Output[Metrics],
                       classification: Output[ClassificationMetrics], report: Output[Markdown],
                       ) -> NamedTuple("GateOutputs", [("passed", bool), ("reasons", str)]):
    """Evaluate on the test split and decide the gate.

    Args:
        config_json: the resolved AimassConfig as JSON (thresholds under `gate`).
        model: the trained model artifact.
        splits: the ingest output; only `test` is used.
        metrics: accuracy, macro-F1, ROC-AUC and per-class precision/recall.
        classification: the confusion matrix, rendered by the Kubeflow UI.
        report: the gate decision and all metrics as Markdown.

    Returns:
        passed: whether every gate threshold holds.
        reasons: JSON list of one sentence per threshold.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from aimass.components.evaluate import evaluate
    from aimass.config import AimassConfig
    from aimass.dataset import CLASS_NAMES

    outcome = evaluate(AimassConfig.from_json(config_json), Path(model.path), Path(splits.path))
    evaluation, decision = outcome.evaluation, outcome.decision
    for name, value in evaluation.headline().items():
        metrics.log_metric(name, value)
    for row in evaluation.per_class:
        metrics.log_metric(f"precision_{row['name']}", row["precision"])
        metrics.log_metric(f"recall_{row['name']}", row["recall"])
    classification.log_confusion_matrix(list(CLASS_NAMES), evaluation.confusion)
    Path(report.path).write_text(outcome.markdown())
    report.metadata.update({**outcome.lineage, "gate_passed": decision.passed})
    return namedtuple("GateOutputs", ["passed", "reasons"])(decision.passed, json.dumps(decision.reasons))
