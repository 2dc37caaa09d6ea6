"""`aimass submit`, `runs` and `schedule`: runs on Kubeflow Pipelines, pinned to a commit and a data version; and
the configuration and pipeline package a cluster run gets."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from aimass.cli.options import config_from_args, wire_repository_commands
from aimass.errors import AimassError


def add_cluster_commands(commands) -> None:
    submit = commands.add_parser(
        "submit", help="start a run on Kubeflow Pipelines",
        description="Compile the pipeline (cluster backends, as `aimass compile`) or take --pipeline, and start a "
                    "run in experiment kubeflow.experiment pinned to this checkout's commit and the data version "
                    "data.dvc pins. Endpoint: kubeflow.host (token from $AIMASS_KFP_TOKEN) or the kubeconfig.")
    submit.add_argument("--pipeline", type=Path, default=None, help="a compiled pipeline YAML to run instead")
    submit.add_argument("--run-name", default=None, help="default: aimass-<commit>-<time>")
    submit.add_argument("--git-commit", default=None, help="default: HEAD of --repo (refused when the tree is dirty)")
    submit.add_argument("--data-version", default=None, help="DVC md5 to train on (default: what data.dvc pins)")
    submit.add_argument("--wait", action="store_true", help="wait for the run, printing each step's state")
    submit.add_argument("--timeout", type=float, default=6 * 3600, help="seconds --wait waits (default 6 h)")
    runs = commands.add_parser("runs", help="recent runs of the experiment and their state",
                               description="List the latest runs of kubeflow.experiment, newest first.")
    runs.add_argument("--limit", type=int, default=10)
    schedule = commands.add_parser("schedule", help="recurring runs (KFP cron, seconds first)",
                                   description="Create, list and delete recurring runs of the pipeline.")
    schedule_commands = schedule.add_subparsers(title="schedule commands", metavar="COMMAND")
    create = schedule_commands.add_parser(
        "create", help="run the pipeline on a cron schedule",
        description="A recurring run pinned to this commit and data version, at most one run at a time and, "
                    "unless --catch-up, no backlog of missed runs. --cron takes KFP's six fields (second minute "
                    "hour day-of-month month day-of-week) or the usual five, which are converted.")
    create.add_argument("name")
    create.add_argument("--cron", required=True, help="e.g. '0 2 * * *' (02:00 daily) or '0 0 2 * * *'")
    create.add_argument("--catch-up", action="store_true", help="after a pause, start the runs that were missed")
    create.add_argument("--replace", action="store_true", help="delete recurring runs of the same name first")
    create.add_argument("--pipeline", type=Path, default=None, help="a compiled pipeline YAML to run instead")
    create.add_argument("--git-commit", default=None, help="default: HEAD of --repo (refused when the tree is dirty)")
    create.add_argument("--data-version", default=None, help="DVC md5 to train on (default: what data.dvc pins)")
    schedule_list = schedule_commands.add_parser("list", help="recurring runs of the experiment")
    delete = schedule_commands.add_parser("delete", help="delete a recurring run")
    delete.add_argument("schedule_id")
    # A cluster run is compiled from the `full` profile, as `aimass compile` does.
    wire_repository_commands([(submit, _submit), (create, _schedule_create)], default_profile="full")
    wire_repository_commands([(runs, _runs), (schedule_list, _schedule_list), (delete, _schedule_delete)])


def run_pins(args: argparse.Namespace, repo: Path, config) -> dict[str, str]:
    """The pipeline arguments that pin a run to code and data: the commit and the DVC md5 data.dvc holds."""
    from aimass.data.versions import pinned_data_md5
    from aimass.lineage import current_git_commit

    commit = getattr(args, "git_commit", None) or current_git_commit(repo)
    if commit == "unknown" or commit.endswith("-dirty"):
        raise AimassError(f"{repo} is {'not a git checkout' if commit == 'unknown' else 'dirty'}: a cluster run is "
                          "pinned to a commit; commit your changes (or give --git-commit)")
    data_version = getattr(args, "data_version", None) or pinned_data_md5(repo, config.data.dvc_file)
    return {"git_commit": commit, "data_version": data_version}


@contextlib.contextmanager
def pipeline_package(args: argparse.Namespace, config):
    """--pipeline as given, or the pipeline compiled for the cluster into a temporary file."""
    if args.pipeline is not None:
        if not args.pipeline.is_file():
            raise AimassError(f"--pipeline {args.pipeline} does not exist")
        yield args.pipeline
        return
    import tempfile

    from aimass.pipelines.compile import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="aimass-pipeline-") as folder:
        yield compile_pipeline(config, Path(folder) / "pipeline.yaml")


def cluster_config(args: argparse.Namespace, repo: Path | None = None):
    """The configuration a cluster run gets: CLUSTER_OVERRIDES, then --set."""
    from aimass.config import CLUSTER_OVERRIDES, load_config

    located = [f"data.repo_dir={repo}"] if repo is not None else []
    return load_config(args.profile, [*located, *CLUSTER_OVERRIDES, *args.overrides])


def _submit(args: argparse.Namespace) -> int:
    import time as clock

    from aimass import kubeflow

    repo = args.repo.resolve()
    config = cluster_config(args, repo)
    pins = run_pins(args, repo, config)
    run_name = args.run_name or f"aimass-{pins['git_commit'][:8]}-{clock.strftime('%Y%m%d-%H%M%S')}"
    client = kubeflow.connect(config.kubeflow)
    with pipeline_package(args, config) as package:
        run_id = kubeflow.submit(client, config.kubeflow, package, run_name, pins)
    print(f"started run {run_name} ({run_id}): commit {pins['git_commit']}, data {pins['data_version']}", flush=True)
    if not args.wait:
        return 0
    final = kubeflow.wait(client, run_id, config.kubeflow.poll_seconds, args.timeout, _print_run_state)
    if final.state != "SUCCEEDED":
        raise kubeflow.KubeflowError(f"run {run_name} ended {final.state}: see its steps in the Kubeflow UI")
    return 0


def _print_run_state(state) -> None:
    steps = ", ".join(f"{name} {task_state}" for name, task_state in state.tasks) or "no step started yet"
    print(f"{state.state:<10} {steps}", flush=True)


def _runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aimass import kubeflow
    from aimass.terminal import console

    config = config_from_args(args)
    table = Table(title=f"runs of experiment {config.kubeflow.experiment}", title_justify="left")
    for column in ("run", "state", "created", "finished", "id"):
        table.add_column(column)
    for run in kubeflow.recent_runs(kubeflow.connect(config.kubeflow), config.kubeflow, args.limit):
        table.add_row(run.name, run.state, run.created_at, run.finished_at, run.run_id)
    console().print(table)
    return 0


def _schedule_create(args: argparse.Namespace) -> int:
    from aimass import kubeflow

    repo = args.repo.resolve()
    config = cluster_config(args, repo)
    cron = kubeflow.kfp_cron(args.cron)  # refuse a bad expression before anything is compiled or sent
    pins = run_pins(args, repo, config)
    client = kubeflow.connect(config.kubeflow)
    if args.replace:
        for existing in kubeflow.schedules(client, config.kubeflow):
            if existing.name == args.name:
                kubeflow.delete_schedule(client, existing.schedule_id)
                print(f"deleted recurring run {existing.name} ({existing.schedule_id})")
    with pipeline_package(args, config) as package:
        created = kubeflow.create_schedule(client, config.kubeflow, package, args.name, cron, pins, args.catch_up)
    print(f"created recurring run {created.name} ({created.schedule_id}): cron '{created.cron}', at most one run at "
          f"a time, {'catching up' if args.catch_up else 'no catch-up'}; commit {pins['git_commit']}")
    return 0


def _schedule_list(args: argparse.Namespace) -> int:
    from aimass import kubeflow

    config = config_from_args(args)
    for item in kubeflow.schedules(kubeflow.connect(config.kubeflow), config.kubeflow):
        print(f"{item.schedule_id}  {item.name}  cron '{item.cron}'  {item.status}  max {item.max_concurrency}  "
              f"{'no catch-up' if item.no_catchup else 'catch-up'}")
    return 0


def _schedule_delete(args: argparse.Namespace) -> int:
    from aimass import kubeflow

    config = config_from_args(args)
    kubeflow.delete_schedule(kubeflow.connect(config.kubeflow), args.schedule_id)
    print(f"deleted recurring run {args.schedule_id}")
    return 0
