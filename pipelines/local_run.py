"""Run the training DAG on this machine with kfp.local and summarise what happened.

kfp.local's SubprocessRunner executes every component in a subprocess of the current Python environment, so the
local run exercises the very DAG, conditions and artifact passing that the cluster runs.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kfp import local
from kfp.local import logging_utils, subprocess_task_handler

from aimass import progress
from aimass.config import AimassConfig
from aimass.pipelines.training import PIPELINE_NAME, build_training_pipeline

STEP_ORDER = ("ingest", "validate-data", "augment", "hpo-select", "train", "compress", "evaluate", "bless-model",
              "deploy", "reject-model")


@dataclass
class StepRecord:
    name: str
    status: str = "not run"  # SUCCESS, FAILURE or "not run"
    seconds: float | None = None
    log: Path | None = None  # the step's whole output

    def last_error_line(self) -> str:
        """The step's own reason for failing: the last line its process wrote that names an error."""
        if self.log is None or not self.log.is_file():
            return ""
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return next((line for line in reversed(lines) if "Error" in line.split(":", 1)[0]), lines[-1] if lines else "")


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


class StepWatcher:
    """What `run_pipeline_locally` tells as the run goes: a step started, reported progress (aimass/progress.py),
    finished. This one tells no one; `aimass run` shows a live line per step (aimass/run_summary.py)."""

    def started(self, step: str) -> None:
        pass

    def progressed(self, step: str, text: str) -> None:
        pass

    def finished(self, step: StepRecord) -> None:
        pass


class _QuietKfpLocal(logging.Filter):
    """Unless `verbose`, keeps kfp.local's own log lines (task outputs dumped in full, its task banners) off the
    terminal, but for errors. A filter on the root logger sees every record: kfp.local swaps the root handlers but
    not its filters."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.ERROR


class StepLogs:
    """kfp.local runs each task in a subprocess and prints all its output (the executor's input and output dumps:
    over a thousand lines a run) to the terminal. This stands in for kfp.local's `run_local_subprocess` (the one
    place aimass tames kfp.local; tests/integration/test_pipeline_local.py fails if kfp changes it): it writes each
    task's output to `<run>/logs/<step>.log`, echoing it to the terminal only when `verbose`, and records the step
    from what the process itself did: its exit status and whether it wrote its executor output (kfp.local may call
    a task whose executor died a success), timed around the process."""

    def __init__(self, verbose: bool, watcher: StepWatcher):
        self.verbose, self.watcher = verbose, watcher
        self.steps: dict[str, StepRecord] = {}

    def __call__(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        output_file = Path(json.loads(full_command[full_command.index("--executor_input") + 1])
                           ["outputs"]["outputFile"])
        task = output_file.parent.name
        name = _step_name(task)
        log = output_file.parent.parent / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.watcher.started(name)
        with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                              env={**os.environ, **(env_vars or {})}) as process, open(log, "a") as stream:
            for line in process.stdout:
                stream.write(line)
                if self.verbose:
                    print(line, end="")
                if (text := progress.parse(line)) is not None:
                    self.watcher.progressed(name, text)
            exit_status = process.wait()
        if exit_status == 0 and not output_file.is_file():
            with open(log, "a") as stream:
                stream.write(f"RuntimeError: the step exited 0 but wrote no executor output ({output_file})\n")
        succeeded = exit_status == 0 and output_file.is_file()
        step = StepRecord(name, "SUCCESS" if succeeded else "FAILURE", time.perf_counter() - started, log)
        self.steps[task] = step
        self.watcher.finished(step)
        return exit_status or (0 if succeeded else 1)


# What kfp.local says on every task that means nothing for a local run (cluster-only settings, our own image).
_KFP_LOCAL_NOISE = ("have no effect in the current local runner", "You may be attemping to run a task that uses custom")


@contextlib.contextmanager
def _tamed_kfp_local(logs: StepLogs, verbose: bool) -> Iterator[None]:
    """The one place aimass changes how kfp.local behaves: each task's output goes to `logs`; unless `verbose`,
    kfp.local's separator lines and its warnings about cluster-only settings stay off the terminal. kfp.local's
    `indented_print` (which swaps `builtins.print` for an indenting one around each task, a swap that overlapping
    ParallelFor threads can leave installed for good) is left out: `logs` writes each task's output itself.
    tests/integration/test_pipeline_local.py fails when a kfp release moves what this relies on."""
    replaced = getattr(subprocess_task_handler, "run_local_subprocess", None)
    separator = getattr(logging_utils, "print_horizontal_line", None)
    indenting = getattr(logging_utils, "indented_print", None)
    if replaced is None or list(inspect.signature(replaced).parameters) != ["full_command", "env_vars"] \
            or separator is None or indenting is None:
        raise RuntimeError("kfp.local's run_local_subprocess(full_command, env_vars), print_horizontal_line() or "
                           "indented_print() is gone or changed: update aimass/pipelines/local_run.py for this kfp "
                           "release")
    subprocess_task_handler.run_local_subprocess = logs
    logging_utils.indented_print = lambda num_spaces=4: contextlib.nullcontext()
    if not verbose:
        logging_utils.print_horizontal_line = lambda: None
    try:
        with warnings.catch_warnings():
            if not verbose:
                for message in _KFP_LOCAL_NOISE:
                    warnings.filterwarnings("ignore", message=f".*{message}")
            yield
    finally:
        subprocess_task_handler.run_local_subprocess = replaced
        logging_utils.print_horizontal_line = separator
        logging_utils.indented_print = indenting


def _step_name(task_name: str) -> str:
    return task_name.removesuffix("-component")


def run_pipeline_locally(config: AimassConfig, pipeline_root: Path, git_commit: str, verbose: bool = True,
                         watcher: StepWatcher | None = None) -> LocalRunResult:
    """Run the whole DAG with `config` through kfp.local, writing artifacts under `pipeline_root` and each step's
    output to `<run>/logs/<step>.log` (also to the terminal when `verbose`); `watcher` hears of each step starting,
    progressing and finishing.

    A failing step does not raise: the result says which step failed, and its log says why.
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=False)
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    logs = StepLogs(verbose, watcher or StepWatcher())
    quiet = _QuietKfpLocal(verbose)
    root_logger = logging.getLogger()
    root_logger.addFilter(quiet)
    try:
        with _tamed_kfp_local(logs, verbose):
            build_training_pipeline(config)(config_json=config.to_json(), git_commit=git_commit)
    finally:
        root_logger.removeFilter(quiet)
    new_runs = sorted(set(pipeline_root.glob(f"{PIPELINE_NAME}-*")) - before)
    run_dir = new_runs[-1] if new_runs else None
    steps = {record.name: record for record in logs.steps.values()}
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
