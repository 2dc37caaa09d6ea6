"""Pure release decisions: each collects every reason before deciding, so a choice or a rejection explains itself,
and none loads a model or reads a file, so the DAG, the CLI and the tests share them.

    choose_candidate     the smallest compressed candidate within the accuracy-drop, size-ratio and latency limits
                         against the teacher (measured side by side by compress), else the teacher itself
    decide_gate          the chosen model's test metrics against the majority-class baseline, the production model
                         on the same test split and any absolute minimums; the pipeline consumes its `passed`
                         output with dsl.If
    smoke_test_failures  what the served model did wrong in deploy's smoke test (failed requests, answers that are
                         not the blessed model's), empty when it passed
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from aimass.compression.profiles import ModelProfile
from aimass.config import GateConfig
from aimass.models.card import TEACHER

# Served answers may differ from the local ones only where compiled int8 kernels round differently.
MIN_SMOKE_AGREEMENT = 0.99


class TestMetrics(Protocol):
    """What the gate reads of a model's scores on the test split (evaluation.metrics.Evaluation has them)."""

    accuracy: float
    macro_f1: float
    corruption_accuracy: float  # NaN when not measured
    calibration_error: float


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # one line per threshold checked, failed ones first


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


def decide_gate(evaluation: TestMetrics, gate: GateConfig, baselines: GateBaselines,
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
    if gate.min_corruption_accuracy is not None:
        checks.append(("accuracy under corruptions (gate)", evaluation.corruption_accuracy,
                       gate.min_corruption_accuracy))
    # `not value >= minimum`: an unmeasured figure (NaN) fails a threshold set for it rather than passing unseen.
    failed = [f"{name}: {_shown(value)} is below the minimum {minimum:.4f}" for name, value, minimum in checks
              if not value >= minimum]
    held = [f"{name}: {value:.4f} meets the minimum {minimum:.4f}" for name, value, minimum in checks
            if value >= minimum]
    if gate.max_calibration_error is not None:
        error, limit = evaluation.calibration_error, gate.max_calibration_error
        (held if error <= limit else failed).append(
            f"calibration error (gate): {_shown(error)} {'meets' if error <= limit else 'is above'} the maximum "
            f"{limit:.4f}")
    notes = [baselines.production_note] if baselines.production_note else []
    return GateDecision(passed=not failed, reasons=failed + held + notes)


def _shown(value: float) -> str:
    return "not measured" if value != value else f"{value:.4f}"  # NaN is the only value unequal to itself


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
            if note := _robustness_note(candidate, teacher):
                verdicts[candidate.name].append(note.removeprefix(", "))
        else:
            qualified.append(candidate)
            verdicts[candidate.name] = [f"qualifies: {ratio:.2f}x smaller, accuracy drop {100 * drop:.2f} points, "
                                        f"latency {latency:.2f}x the teacher's{_robustness_note(candidate, teacher)}"]
    if not qualified:
        return CompressionChoice(TEACHER, verdicts)
    chosen = min(qualified, key=lambda candidate: candidate.size_bytes)
    verdicts[chosen.name] = ["chosen (smallest qualifying): " + verdicts[chosen.name][0].removeprefix("qualifies: ")]
    return CompressionChoice(chosen.name, verdicts)


def _robustness_note(candidate: ModelProfile, teacher: ModelProfile) -> str:
    """What compression did to robustness and calibration (on validation), which clean accuracy can hide."""
    if candidate.corruption_accuracy is None or teacher.corruption_accuracy is None:
        return ""
    return (f", accuracy under corruptions {candidate.corruption_accuracy:.4f} (teacher "
            f"{teacher.corruption_accuracy:.4f}), calibration error {candidate.calibration_error:.4f} (teacher "
            f"{teacher.calibration_error:.4f})")


def smoke_test_failures(images: int, agreement: float, failed_requests: list[str]) -> list[str]:
    """Why the served model failed its smoke test (none: it passed): any failed request, or answers that agree with
    the blessed model's own on fewer than MIN_SMOKE_AGREEMENT of the `images` sent."""
    failures = []
    if failed_requests:
        failures.append(f"{len(failed_requests)} request(s) failed, first: {failed_requests[0]}")
    if agreement < MIN_SMOKE_AGREEMENT:
        failures.append(f"the served model answers {images} held-out images as the blessed model does for "
                        f"only {agreement:.2%} (at least {MIN_SMOKE_AGREEMENT:.0%} expected): it is not the model "
                        "that passed the gate")
    return failures
