"""Run the training DAG on this machine with kfp.local and summarise what happened.

kfp.local's SubprocessRunner executes every component in a subprocess of the current Python environment, so the
local run exercises the very DAG, conditions and artifact passing that the cluster runs.
"""
from __future__ import annotations

import builtins
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kfp import local

from aimass.config import AimassConfig
from aimass.pipelines.training import PIPELINE_NAME, build_training_pipeline

STEP_ORDER = ("ingest", "validate-data", "augment", "hpo-select", "train", "compress", "evaluate", "bless-model",
              "deploy", "reject-model")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"^Executing task '([^']+)'")
_FINISHED = re.compile(r"^Task '([^']+)' finished with status (\w+)")


@dataclass
class StepRecord:
    name: str
    status: str = "not run"  # SUCCESS, FAILURE or "not run"
    seconds: float | None = None


@dataclass
class LocalRunResult:
    run_dir: Path | None
    steps: list[StepRecord]
    outputs: dict[str, dict] = field(default_factory=dict)  # step -> executor output (parameters and artifacts)

    @property
    def succeeded(self) -> bool:
        return bool(self.steps) and all(s.status in ("SUCCESS", "not run") for s in self.steps) and \
            any(s.name == "deploy" and s.status == "SUCCESS" for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if s.status == "FAILURE"), None)

    def artifact(self, step: str, name: str) -> dict | None:
        found = self.outputs.get(step, {}).get("artifacts", {}).get(name, {}).get("artifacts", [])
        return found[0] if found else None

    def parameter(self, step: str, name: str):
        return self.outputs.get(step, {}).get("parameterValues", {}).get(name)


class _TaskTimeline(logging.Filter):
    """Times each task from kfp.local's own log records (a filter on the root logger sees every record, and
    kfp.local swaps the root handlers but not its filters)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.steps: dict[str, StepRecord] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", record.getMessage())
        if match := _STARTED.match(message):
            self.started[match.group(1)] = record.created
        elif match := _FINISHED.match(message):
            task = match.group(1)
            self.steps[task] = StepRecord(_step_name(task), match.group(2), record.created - self.started.get(task, record.created))
        return True


def _step_name(task_name: str) -> str:
    return task_name.removesuffix("-component")


def run_pipeline_locally(config: AimassConfig, pipeline_root: Path, git_commit: str) -> LocalRunResult:
    """Run the whole DAG with `config` through kfp.local, writing artifacts under `pipeline_root`.

    A failing step does not raise: the result says which step failed, and the step's own error is in the log.
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=False)
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    timeline = _TaskTimeline()
    root_logger = logging.getLogger()
    root_logger.addFilter(timeline)
    # kfp.local indents each task's output by swapping builtins.print in and out; tasks of a ParallelFor run in
    # threads, and two overlapping swaps can leave the indenting print installed for good. Put the real one back.
    real_print = builtins.print
    try:
        build_training_pipeline(config)(config_json=config.to_json(), git_commit=git_commit)
    finally:
        builtins.print = real_print
        root_logger.removeFilter(timeline)
    new_runs = sorted(set(pipeline_root.glob(f"{PIPELINE_NAME}-*")) - before)
    run_dir = new_runs[-1] if new_runs else None
    steps = {record.name: record for record in timeline.steps.values()}
    # The search's plan, trial and record tasks (one per round and trial) are summed up in its select step.
    shown = [name for name in STEP_ORDER if name != "hpo-select" or config.hpo.enabled]
    ordered = [steps.get(name, StepRecord(name)) for name in shown]
    return LocalRunResult(run_dir=run_dir, steps=ordered, outputs=_read_outputs(run_dir))


def _read_outputs(run_dir: Path | None) -> dict[str, dict]:
    if run_dir is None:
        return {}
    return {
        _step_name(output.parent.name): json.loads(output.read_text())
        for output in run_dir.glob("*/executor_output.json")
    }


def timestamped_root(base: Path) -> Path:
    return base / time.strftime("%Y%m%d-%H%M%S")
