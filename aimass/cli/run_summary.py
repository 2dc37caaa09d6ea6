"""The table `aimass run` ends with: each step's status and time, the data validation verdict, the test metrics
and where the artifacts are."""
from __future__ import annotations

import json

from rich.console import Console
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from aimass import terminal
from aimass.pipelines.local_run import LocalRunResult, StepRecord, StepWatcher
from aimass.reports import markdown_table

_STATUS_STYLE = {"SUCCESS": "green", "FAILURE": "bold red", "not run": "dim"}


def step_line(step: StepRecord) -> str:
    """A finished step: status, seconds and, when it failed, its own reason and its log."""
    line = f"{step.name:<22} [{_STATUS_STYLE.get(step.status, 'bold')}]{step.status:<8}[/] {step.seconds or 0:7.1f} s"
    if step.status == "FAILURE":
        line += f"  {step.last_error_line()}  (log: {step.log})"
    return line


class LiveRunView(StepWatcher):
    """`aimass run`'s view of a run: on a terminal, one live line per running step (its elapsed time and latest
    progress, such as the epoch and images/s or the candidate being built), replaced by the step's final line when
    it finishes; elsewhere (CI logs, pipes) only the final lines, so a log stays short."""

    def __init__(self, console: Console | None = None):
        self.console = console or terminal.console()
        self.live: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> LiveRunView:
        if self.console.is_terminal:
            self.live = Progress(TextColumn("{task.fields[step]:<22} [yellow]running[/] "), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=self.console, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live is not None:
            self.live.stop()

    def started(self, step: str) -> None:
        if self.live is not None:
            self.tasks[step] = self.live.add_task("", total=None, step=step)

    def progressed(self, step: str, text: str) -> None:
        if self.live is not None and step in self.tasks:
            self.live.update(self.tasks[step], description=text)

    def finished(self, step: StepRecord) -> None:
        if self.live is not None and step.name in self.tasks:
            self.live.remove_task(self.tasks.pop(step.name))
        self.console.print(step_line(step), highlight=False, soft_wrap=True)


def print_run_summary(result: LocalRunResult, console: Console | None = None) -> None:
    console = console or terminal.console()
    steps = Table(title="aimass run", title_justify="left")
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("seconds", justify="right")
    for step in result.steps:
        seconds = "" if step.seconds is None else f"{step.seconds:.1f}"
        steps.add_row(step.name, f"[{_STATUS_STYLE[step.status]}]{step.status}[/]", seconds)
    console.print(steps)

    docs = result.artifact("validate-data", "data_docs")
    if docs is not None:
        console.print(f"data validation: {'passed' if docs['metadata'].get('success') else 'FAILED'}")
    elif result.failed_step == "validate-data":
        console.print("data validation: [bold red]FAILED[/] (the failed expectations are in the step's log)")
    chosen_hyperparameters = result.parameter("hpo-select", "Output")
    if chosen_hyperparameters is not None:
        search = result.artifact("hpo-select", "metrics")["metadata"]
        console.print(f"hyper-parameter search: {chosen_hyperparameters} (best of {int(search['trials'])} trials, "
                      f"validation accuracy {search['best_validation_accuracy']:.4f}; "
                      f"{int(search['pruned_trials'])} pruned)")
    metrics = result.artifact("evaluate", "metrics")
    if metrics is not None:
        values = metrics["metadata"]
        console.print(f"shipped model's test accuracy {values['accuracy']:.4f}, macro-F1 {values['macro_f1']:.4f}, "
                      f"ROC-AUC {values['roc_auc_ovr']:.4f}")
    chosen = result.parameter("evaluate", "chosen")
    if chosen is not None:
        console.print(f"shipped model: {chosen} (the compression choice and every candidate's verdict are in the "
                      "evaluate report)")
    reasons = result.parameter("evaluate", "reasons")
    if reasons is not None:
        console.print("gate: " + "; ".join(json.loads(reasons)))
    blessed = result.artifact("bless-model", "blessed")
    if blessed is not None:
        console.print(f"blessed model: {blessed['uri']}")
    smoke = result.artifact("deploy", "smoke_metrics")
    if smoke is not None:
        values = smoke["metadata"]
        console.print(f"deployed: {values['model_version']} as release revision {int(values['release_revision'])}; "
                      f"the served model answered {int(values['smoke_test_images'])} held-out images over HTTP "
                      f"with accuracy {values['smoke_test_accuracy']:.4f}")
        console.print("serve it: [bold]aimass serve[/] (then POST to /v2/models/<name>/infer; see the README)")
    if result.run_dir is not None:
        console.print(f"artifacts: {result.run_dir}")


def markdown_run_summary(result: LocalRunResult, profile: str) -> str:
    """The same summary as Markdown: each step's status and time, the test metrics, the gate's verdict."""
    steps = markdown_table(["step", "status", "seconds"], [
        (step.name, step.status, "" if step.seconds is None else f"{step.seconds:.1f}") for step in result.steps])
    lines = [f"### aimass run (`{profile}` profile): {'succeeded' if result.succeeded else 'FAILED'}", "", steps, ""]
    metrics = result.artifact("evaluate", "metrics")
    if metrics is not None:
        values = metrics["metadata"]
        lines.append(f"- test accuracy **{values['accuracy']:.4f}**, macro-F1 {values['macro_f1']:.4f}, "
                     f"ROC-AUC {values['roc_auc_ovr']:.4f}")
    if (chosen := result.parameter("evaluate", "chosen")) is not None:
        lines.append(f"- shipped model: `{chosen}`")
    if (hyperparameters := result.parameter("hpo-select", "Output")) is not None:
        lines.append(f"- hyper-parameters chosen by the search: `{hyperparameters}`")
    if (reasons := result.parameter("evaluate", "reasons")) is not None:
        lines.append("- gate: " + "; ".join(json.loads(reasons)))
    smoke = result.artifact("deploy", "smoke_metrics")
    if smoke is not None:
        values = smoke["metadata"]
        lines.append(f"- deployed {values['model_version']}; served-model accuracy "
                     f"{values['smoke_test_accuracy']:.4f} on {int(values['smoke_test_images'])} held-out images")
    if result.failed_step:
        lines.append(f"- failed at step `{result.failed_step}`")
    return "\n".join(lines) + "\n"
