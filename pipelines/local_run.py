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
from kfp.local import docker_task_handler, logging_utils, subprocess_task_handler

from aimass import progress
from aimass.config import PROJECT_IMAGE, AimassConfig
from aimass.containers import StepContainer, container_engine, require_image, step_container
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

    def __init__(self, verbose: bool, watcher: StepWatcher, container: StepContainer | None = None):
        self.verbose, self.watcher, self.container = verbose, watcher, container
        self.steps: dict[str, StepRecord] = {}

    def __call__(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """kfp.local's `run_local_subprocess`: the task as a process of this Python environment."""
        return self._record(full_command, lambda write: _run_process(full_command, env_vars, write))

    def run_container(self, client, image: str, command: list[str], volumes: dict, **container_run_args) -> int:
        """kfp.local's `run_docker_container`: the task in the project image, as `self.container` says, waiting
        for its real exit status (kfp.local's own removes the container first and may then assume success)."""
        if self.container is None:
            raise RuntimeError("StepLogs.run_container needs the run's StepContainer")
        arguments = self.container.run_arguments(volumes, container_run_args.get("environment"))
        run_folder = _output_file(command).parent.parent
        (run_folder / "logs").mkdir(parents=True, exist_ok=True)  # as _record would, but before the hand-over
        self.container.make_writable(run_folder)
        return self._record(command, lambda write: _run_container(client, image, command, arguments, write))

    def _record(self, full_command: list[str], run) -> int:
        output_file = _output_file(full_command)
        task = output_file.parent.name
        name = _step_name(task)
        log = output_file.parent.parent / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.watcher.started(name)
        with open(log, "a") as stream:
            def write(line: str) -> None:
                stream.write(line)
                stream.flush()
                if self.verbose:
                    print(line, end="")
                if (text := progress.parse(line)) is not None:
                    self.watcher.progressed(name, text)

            exit_status = run(write)
            if exit_status == 0 and not output_file.is_file():
                stream.write(f"RuntimeError: the step exited 0 but wrote no executor output ({output_file})\n")
        succeeded = exit_status == 0 and output_file.is_file()
        step = StepRecord(name, "SUCCESS" if succeeded else "FAILURE", time.perf_counter() - started, log)
        self.steps[task] = step
        self.watcher.finished(step)
        return exit_status or (0 if succeeded else 1)


def _output_file(full_command: list[str]) -> Path:
    return Path(json.loads(full_command[full_command.index("--executor_input") + 1])["outputs"]["outputFile"])


def _run_process(full_command: list[str], env_vars: dict[str, str] | None, write) -> int:
    with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env={**os.environ, **(env_vars or {})}) as process:
        for line in process.stdout:
            write(line)
        return process.wait()


def _run_container(client, image: str, command: list[str], arguments: dict, write) -> int:
    # The task's command replaces the image's ENTRYPOINT (`aimass`), as a pod's `command` does on Kubernetes;
    # kfp.local's own handler passes it as arguments to the entry point instead.
    container = client.containers.create(image=image, entrypoint=command, **arguments)
    try:
        write(f"aimass: running in container {container.short_id} of {image} as user {arguments['user']}\n")
        container.start()
        pending = b""
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                write(line.decode(errors="replace") + "\n")
        if pending:
            write(pending.decode(errors="replace") + "\n")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


# What kfp.local says on every task that means nothing for a local run (cluster-only settings, our own image).
_KFP_LOCAL_NOISE = ("have no effect in the current local runner", "You may be attemping to run a task that uses custom")


@contextlib.contextmanager
def _tamed_kfp_local(logs: StepLogs, verbose: bool) -> Iterator[None]:
    """The one place aimass changes how kfp.local behaves: each task's output goes to `logs`; unless `verbose`,
    kfp.local's separator lines and its warnings about cluster-only settings stay off the terminal. kfp.local's
    `indented_print` (which swaps `builtins.print` for an indenting one around each task, a swap that overlapping
    ParallelFor threads can leave installed for good) is left out: `logs` writes each task's output itself.
    Its Docker runner's `run_docker_container` goes to `logs` too, which waits for each container's exit status.
    tests/integration/test_pipeline_local.py fails when a kfp release moves what this relies on."""
    replaced = getattr(subprocess_task_handler, "run_local_subprocess", None)
    replaced_container = getattr(docker_task_handler, "run_docker_container", None)
    separator = getattr(logging_utils, "print_horizontal_line", None)
    indenting = getattr(logging_utils, "indented_print", None)
    if replaced is None or list(inspect.signature(replaced).parameters) != ["full_command", "env_vars"] \
            or replaced_container is None or list(inspect.signature(replaced_container).parameters) != [
                "client", "image", "command", "volumes", "container_run_args"] \
            or separator is None or indenting is None:
        raise RuntimeError("kfp.local's run_local_subprocess(full_command, env_vars), run_docker_container(client, "
                           "image, command, volumes, **container_run_args), print_horizontal_line() or "
                           "indented_print() is gone or changed: update aimass/pipelines/local_run.py for this kfp "
                           "release")
    subprocess_task_handler.run_local_subprocess = logs
    docker_task_handler.run_docker_container = logs.run_container
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
        docker_task_handler.run_docker_container = replaced_container
        logging_utils.print_horizontal_line = separator
        logging_utils.indented_print = indenting


def _step_name(task_name: str) -> str:
    return task_name.removesuffix("-component")


RUNNERS = ("subprocess", "docker")


def run_pipeline_locally(config: AimassConfig, pipeline_root: Path, git_commit: str, verbose: bool = True,
                         watcher: StepWatcher | None = None, runner: str = "subprocess",
                         trigger: tuple[str, str] = ("manual", "")) -> LocalRunResult:
    """Run the whole DAG with `config` through kfp.local, writing artifacts under `pipeline_root` and each step's
    output to `<run>/logs/<step>.log` (also to the terminal when `verbose`); `watcher` hears of each step starting,
    progressing and finishing. `runner`: "subprocess" runs each step in a process of this Python environment,
    "docker" in a container of the project image (aimass/containers.py), through Docker or podman.

    `trigger` (what started the run, and why) goes into every model's lineage.
    A failing step does not raise: the result says which step failed, and its log says why.

    Raises:
        ContainerEngineError: runner "docker" without a container engine or without the project image.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        with container_engine():
            require_image(PROJECT_IMAGE)
            local.init(runner=local.DockerRunner(), pipeline_root=str(pipeline_root), raise_on_error=False)
            return _run(config, pipeline_root, git_commit, verbose, watcher, step_container(config, pipeline_root),
                        trigger)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=False)
    return _run(config, pipeline_root, git_commit, verbose, watcher, None, trigger)


def _run(config: AimassConfig, pipeline_root: Path, git_commit: str, verbose: bool, watcher: StepWatcher | None,
         container: StepContainer | None, trigger: tuple[str, str]) -> LocalRunResult:
    before = set(pipeline_root.glob(f"{PIPELINE_NAME}-*"))
    logs = StepLogs(verbose, watcher or StepWatcher(), container)
    quiet = _QuietKfpLocal(verbose)
    root_logger = logging.getLogger()
    root_logger.addFilter(quiet)
    try:
        with _tamed_kfp_local(logs, verbose):
            build_training_pipeline(config)(config_json=config.to_json(), git_commit=git_commit, trigger=trigger[0],
                                            trigger_reason=trigger[1])
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
