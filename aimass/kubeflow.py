"""Runs and schedules on a Kubeflow Pipelines endpoint through kfp.Client: submit a compiled pipeline, wait for it
printing step states, list recent runs, and manage recurring runs.

KFP's cron has six fields, seconds first (`0 30 2 * * *` is 02:30:00 every day); `kfp_cron` accepts that or the
usual five-field form, which it converts, and explains what it refuses.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimass.config import KubeflowConfig
from aimass.errors import AimassError
from aimass.polling import poll_until

TOKEN_VARIABLE = "AIMASS_KFP_TOKEN"
FINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}


class KubeflowError(AimassError):
    """A KFP request was refused or a run did not succeed."""


@dataclass(frozen=True)
class RunState:
    run_id: str
    name: str
    state: str
    created_at: str
    finished_at: str
    tasks: tuple[tuple[str, str], ...]  # (step, state)


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    name: str
    cron: str
    status: str
    max_concurrency: int
    no_catchup: bool


def connect(settings: KubeflowConfig):
    """A kfp.Client for `settings`: the token from $AIMASS_KFP_TOKEN if set, else kfp's own discovery (kubeconfig,
    or the service-account token inside a cluster). Never takes a credential as an argument that logs could echo."""
    import kfp

    try:
        return kfp.Client(host=settings.host, namespace=settings.namespace, kube_context=settings.kube_context,
                          existing_token=os.environ.get(TOKEN_VARIABLE) or None)
    except Exception as error:  # kfp raises whatever its transport does
        raise KubeflowError(f"cannot reach Kubeflow Pipelines at {settings.host or 'the kubeconfig cluster'}: "
                            f"{error}") from error


def submit(client, settings: KubeflowConfig, package: Path, run_name: str, arguments: dict[str, str]) -> str:
    """Start a run of the compiled pipeline `package` in the configured experiment; returns its run id."""
    result = _call("start the run", lambda: client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=settings.experiment,
        namespace=settings.namespace, service_account=settings.service_account))
    return result.run_id


def run_state(client, run_id: str) -> RunState:
    return _run_state(_call(f"read run {run_id}", lambda: client.get_run(run_id)))


def wait(client, run_id: str, poll_seconds: float, timeout_seconds: float,
         on_change: Callable[[RunState], None] = lambda state: None) -> RunState:
    """Poll the run until it ends, calling `on_change` whenever its state or a step's state changes.

    Raises:
        KubeflowError: the run did not end within `timeout_seconds`.
    """
    seen: list[RunState] = []

    def ended() -> RunState | None:
        state = run_state(client, run_id)
        if not seen or (state.state, state.tasks) != (seen[-1].state, seen[-1].tasks):
            on_change(state)
        seen[:] = [state]  # the last state, for the timeout's message
        return state if state.state in FINAL_STATES else None

    return poll_until(ended, timeout_seconds, poll_seconds, lambda: KubeflowError(
        f"run {run_id} is still {seen[-1].state} after {timeout_seconds:.0f} s; it goes on running: `aimass runs` "
        "shows it"))


def recent_runs(client, settings: KubeflowConfig, limit: int) -> list[RunState]:
    experiment_id = _experiment_id(client, settings)
    if experiment_id is None:
        return []
    response = _call("list runs", lambda: client.list_runs(experiment_id=experiment_id, page_size=limit,
                                                           sort_by="created_at desc", namespace=settings.namespace))
    return [_run_state(run) for run in response.runs or []]


def create_schedule(client, settings: KubeflowConfig, package: Path, name: str, cron: str,
                    arguments: dict[str, str], catch_up: bool = False) -> Schedule:
    """A recurring run of `package`: at most one run at a time, and (unless `catch_up`) no backlog of missed runs
    after a pause."""
    experiment = _call("find or create the experiment", lambda: client.create_experiment(
        settings.experiment, namespace=settings.namespace))
    created = _call("create the recurring run", lambda: client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=name, cron_expression=kfp_cron(cron), max_concurrency=1,
        no_catchup=not catch_up, params=arguments, pipeline_package_path=str(package), enabled=True,
        service_account=settings.service_account))
    return _schedule(created)


def schedules(client, settings: KubeflowConfig) -> list[Schedule]:
    experiment_id = _experiment_id(client, settings)
    if experiment_id is None:
        return []
    response = _call("list recurring runs", lambda: client.list_recurring_runs(
        experiment_id=experiment_id, page_size=100, namespace=settings.namespace))
    return [_schedule(recurring) for recurring in response.recurring_runs or []]


def delete_schedule(client, schedule_id: str) -> None:
    _call(f"delete recurring run {schedule_id}", lambda: client.delete_recurring_run(schedule_id))


# ---- cron ----

_FIELDS = (  # name, lowest, highest, names allowed
    ("second", 0, 59, ()), ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_HELP = ("KFP reads six fields, seconds first: 'second minute hour day-of-month month day-of-week', e.g. "
         "'0 30 2 * * *' runs at 02:30:00 every day; the usual five-field form ('30 2 * * *') is converted")


def kfp_cron(expression: str) -> str:
    """The six-field cron KFP expects, from a five- or six-field expression or a descriptor such as @daily.

    Raises:
        KubeflowError: the expression is not valid cron, with the field that is wrong and the form KFP expects.
    """
    expression = " ".join(expression.split())
    if expression in _DESCRIPTORS or re.fullmatch(r"@every \d+[hms](\d+[ms])?(\d+s)?", expression):
        return expression
    fields = expression.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise KubeflowError(f"cron {expression!r} has {len(fields)} fields; {_HELP}")
    for value, (name, low, high, names) in zip(fields, _FIELDS):
        problem = _field_problem(value, low, high, names)
        if problem:
            raise KubeflowError(f"cron {expression!r}: the {name} field {value!r} {problem}; {_HELP}")
    return " ".join(fields)


def _field_problem(value: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    for part in value.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return f"has a bad step {step!r}"
        if base in ("*", "?"):
            continue
        for bound in base.split("-", 1):
            number = names.index(bound.upper()) + (low if names else 0) if bound.upper() in names else bound
            if not str(number).isdigit() or not low <= int(number) <= high:
                return f"is outside {low}-{high}" + (f" (or {names[0]}-{names[-1]})" if names else "")
    return None


# ---- internals ----

def _call(what: str, request):
    try:
        return request()
    except Exception as error:  # kfp_server_api.ApiException, connection errors
        body = getattr(error, "body", None)
        raise KubeflowError(f"could not {what}: {body or error}") from error


def _experiment_id(client, settings: KubeflowConfig) -> str | None:
    try:
        return client.get_experiment(experiment_name=settings.experiment, namespace=settings.namespace).experiment_id
    except ValueError:  # kfp: "No experiment is found with name ..."
        return None


def _run_state(run) -> RunState:
    tasks = tuple((task.display_name, task.state) for task in (run.run_details.task_details or [])
                  if task.display_name) if run.run_details else ()
    return RunState(run.run_id, run.display_name, run.state or "UNKNOWN", str(run.created_at or ""),
                    str(run.finished_at or ""), tasks)


def _schedule(recurring) -> Schedule:
    cron = recurring.trigger.cron_schedule.cron if recurring.trigger and recurring.trigger.cron_schedule else ""
    return Schedule(recurring.recurring_run_id, recurring.display_name, cron, str(recurring.status or recurring.mode),
                    int(recurring.max_concurrency or 0), bool(recurring.no_catchup))
