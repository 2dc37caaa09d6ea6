"""A classifier's scores on labelled images: accuracy, macro-F1, macro one-vs-rest ROC-AUC, per-class precision,
recall and F1, and the confusion matrix (scikit-learn's implementations)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    roc_auc_ovr: float  # macro average of one-vs-rest ROC-AUC
    per_class: list[dict]  # name, precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    # aimass/models/robustness.py: NaN (and no corruptions) when not measured
    corruption_accuracy: float = math.nan  # mean accuracy over every corruption and severity measured
    corruptions: dict[str, dict[int, float]] = field(default_factory=dict)  # corruption -> severity -> accuracy
    calibration_error: float = math.nan  # expected calibration error

    def headline(self) -> dict[str, float]:
        """The figures a run records (metrics, the registry's gate metrics, the model card); unmeasured ones left
        out."""
        figures = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "roc_auc_ovr": self.roc_auc_ovr,
                   "corruption_accuracy": self.corruption_accuracy, "calibration_error": self.calibration_error}
        return {name: value for name, value in figures.items() if not math.isnan(value)}


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
