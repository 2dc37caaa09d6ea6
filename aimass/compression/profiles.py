"""What compress measured of every candidate and the teacher (`ModelProfile`), the profiles file it writes for
evaluate to choose from, and their tables. No torch here: the gate reads profiles without loading a model
(measurement.py measures them)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aimass.integrity import read_verified_manifest
from aimass.reports import markdown_table

PROFILES_FILE = "profiles.json"
FAILURES_FILE = "failures.json"


@dataclass(frozen=True)
class ModelProfile:
    name: str  # "teacher" or the compression method
    backend: str  # float32, or which int8 flow produced the weights
    parameters: int  # of the float network (int8 candidates: of the network they quantize)
    nonzero_parameters: int
    size_bytes: int  # model directory on disk
    accuracy: float  # on the validation split
    latency_p50_ms: float | None  # batch 1, CPU; None: not timed, the size gate rules it out
    latency_p99_ms: float | None
    throughput_b64: float | None  # images/s at batch 64, CPU
    runtime: str  # eager or inductor (torch.compile); "not timed"
    # On the validation split, as evaluate measures the chosen model on test (aimass/models/robustness.py); None
    # where not measured (a candidate the size gate rules out, or profiles written before they were measured).
    corruption_accuracy: float | None = None
    calibration_error: float | None = None


def read_profiles(candidates_dir: Path) -> list[ModelProfile]:
    """The profiles written by `compress`, after verifying the candidates' sha256 manifest."""
    read_verified_manifest(candidates_dir)
    return [ModelProfile(**entry) for entry in json.loads((candidates_dir / PROFILES_FILE).read_text())]


def read_failures(candidates_dir: Path) -> dict[str, str]:
    """Candidate -> why its technique failed (the manifest covers the file; read_profiles verified it)."""
    path = candidates_dir / FAILURES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def failures_markdown(failures: dict[str, str]) -> str:
    if not failures:
        return ""
    return "\n## Failed candidates\n\n" + markdown_table(["candidate", "why"], sorted(failures.items()))


def profiles_markdown(profiles: list[ModelProfile]) -> str:
    teacher = profiles[0]
    def timing(value: float | None, form: str) -> str:
        return "—" if value is None else format(value, form)  # not timed: the size gate rules it out

    speed_up = {p.name: p.throughput_b64 / teacher.throughput_b64 if p.throughput_b64 else None for p in profiles}
    rows = [(p.name, p.backend, p.parameters, p.nonzero_parameters, f"{p.size_bytes / 1024:.0f}",
             f"{teacher.size_bytes / p.size_bytes:.2f}x", f"{p.accuracy:.4f}", timing(p.latency_p50_ms, ".3f"),
             timing(p.latency_p99_ms, ".3f"), timing(p.throughput_b64, ".0f"), timing(speed_up[p.name], ".2f"),
             p.runtime, timing(p.corruption_accuracy, ".4f"), timing(p.calibration_error, ".4f")) for p in profiles]
    headers = ["model", "backend", "params", "non-zero", "KiB", "smaller", "val. accuracy", "p50 ms (b1)", "p99 ms (b1)",
               "img/s (b64)", "speed-up (b64, x)", "runtime", "val. accuracy under corruptions", "val. ECE"]
    return "# Compression candidates\n\n" + markdown_table(headers, rows)
