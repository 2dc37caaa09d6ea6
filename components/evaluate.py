"""evaluate: the KFP wrapper of aimass/evaluation/stage.py's `evaluate` (the choice and the gate are pure decisions
in aimass/gates.py)."""
from typing import NamedTuple

from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from aimass.components.base import project_component


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

    from aimass.evaluation.stage import evaluate
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
