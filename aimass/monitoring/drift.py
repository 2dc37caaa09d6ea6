"""A window of live traffic measured against what the model was trained on: one function for the server's sliding
window and for `aimass monitor`, built on data validation's own statistics and distances (aimass/data/profile.py).

    brightness, contrast, width, height, channels   each image's statistics (`image_statistics`, as ingest computes
        them), binned at the training split's deciles and compared with the training profile in the model card,
        with validation's thresholds and sampling allowance (`compare_profiles`)
    predicted class                                 the window's class mix as the model predicts it, against the
        model's predictions on its reference (validation) images: like against like, since a model's predicted
        mix differs from the true one by its own confusions
    model outputs                                   MMD between the window's class probabilities and the reference
        images' (`mmd.py`), which catches a change of content at equal brightness and size
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aimass.config import MonitorConfig, ValidationConfig
from aimass.data.profile import NUMERIC_STATISTICS, DistanceCheck, compare_profiles, profile_split

IMAGE_STATISTICS = (*NUMERIC_STATISTICS, "channels")
PREDICTED_CLASS = "predicted class"
MODEL_OUTPUTS = "model outputs"


@dataclass(frozen=True)
class DriftReport:
    images: int
    checks: list[DistanceCheck]
    mmd_p_value: float | None = None
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why

    @property
    def drifted(self) -> list[DistanceCheck]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict:
        return {"images": self.images, "detected": bool(self.drifted), "notes": self.notes,
                "checks": [{"statistic": c.statistic, "kind": c.kind, "distance": round(c.distance, 6),
                            "threshold": round(c.threshold, 6), "drifted": not c.passed,
                            **({"p_value": self.mmd_p_value} if c.statistic == MODEL_OUTPUTS else {})}
                           for c in self.checks]}


def measure_drift(statistics: dict[str, np.ndarray], probabilities: np.ndarray, class_names: list[str] | tuple,
                  data_profile: dict | None, reference_outputs: np.ndarray | None, compared: str,
                  validation: ValidationConfig, monitor: MonitorConfig) -> DriftReport:
    """`statistics` of a window's images (`image_statistics`) and the model's `probabilities` for them (N, classes),
    against the model card's `data_profile` and the `reference_outputs` kept with the model."""
    images = len(probabilities)
    predicted = probabilities.argmax(axis=1)
    names = tuple(class_names)
    checks, notes = [], []
    if data_profile is not None:
        window = profile_split(statistics, predicted, names, reference=data_profile)
        checks += compare_profiles(window, data_profile, compared, validation.max_js_distance,
                                   validation.max_linf_distance, validation.sampling_allowance, IMAGE_STATISTICS)
    else:
        notes.append("the model card records no training data profile: image statistics not compared")
    if reference_outputs is None:
        notes.append("the model was registered without reference outputs: predicted class and model outputs not "
                     "compared")
        return DriftReport(images, checks, None, notes)
    reference_predicted = reference_outputs.argmax(axis=1)
    as_profile = lambda labels: {"images": len(labels), "categorical": {  # noqa: E731
        "class": dict(zip(names, np.bincount(labels, minlength=len(names)).tolist()))}}
    class_check, = compare_profiles(as_profile(predicted), as_profile(reference_predicted), compared,
                                    validation.max_js_distance, validation.max_linf_distance,
                                    validation.sampling_allowance, ("class",))
    checks.append(DistanceCheck(PREDICTED_CLASS, compared, class_check.kind, class_check.distance,
                                class_check.threshold))
    from aimass.monitoring.mmd import mmd_permutation_test  # torch: the server has it loaded already

    result = mmd_permutation_test(reference_outputs, probabilities, monitor.embedding_p_value, monitor.permutations)
    checks.append(DistanceCheck(MODEL_OUTPUTS, compared, "MMD²", result.mmd2, result.threshold))
    return DriftReport(images, checks, result.p_value, notes)
