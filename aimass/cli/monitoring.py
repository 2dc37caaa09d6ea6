"""`aimass monitor` and `aimass feedback`: what production is asked, how it answers, and the response to a breach."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from aimass.errors import AimassError

BREACH_EXIT = 3  # documented: a breach was found and nothing (more) was done about it


def add_monitoring_commands(commands, wire) -> None:
    monitor = commands.add_parser(
        "monitor", help="drift and live accuracy of the served model, from the capture store; retrain on a breach",
        description="Read every replica's captured requests and labels (serving.capture.uri) since --since, measure "
                    "each model version as the server does (image statistics against the training profile, the "
                    "predicted class mix and an MMD test on the model's outputs against its reference, live "
                    "accuracy from labels), write an HTML report and JSON, and end with one line saying whether "
                    "anything breached. Exit status: 0 nothing breached, 3 a breach; with --retrain a breach builds a "
                    "data version with the labelled captured images and starts a retraining run (exit 0 when it "
                    "ran or one is already under way, 1 when it failed, 3 when there was nothing to learn from).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    monitor.add_argument("--since", default=None, metavar="DURATION",
                         help="look back this far, e.g. 30m, 24h, 7d (default: monitor.since)")
    monitor.add_argument("--json", action="store_true", help="print the whole report as JSON")
    monitor.add_argument("--report", type=Path, default=None, metavar="PATH",
                         help="the HTML report (default: monitor.report); the JSON goes beside it")
    monitor.add_argument("--retrain", action="store_true", help="on a breach, retrain on the captured images")
    monitor.add_argument("--cluster", action="store_true",
                         help="with --retrain: pull production's data version from the DVC remote and submit the "
                              "run to Kubeflow Pipelines (what the chart's CronJob runs)")
    monitor.add_argument("--git-commit", default=None,
                         help="with --cluster: the commit to run (default: the production model's)")
    monitor.add_argument("--pipeline", type=Path, default=None, help="with --cluster: a compiled pipeline YAML")
    feedback = commands.add_parser("feedback", help="labels for answered requests")
    feedback_commands = feedback.add_subparsers(title="feedback commands", metavar="COMMAND")
    feedback_import = feedback_commands.add_parser(
        "import", help="import labels from a CSV (id,label) or JSONL file into the capture store",
        description="Labels that arrive later, in bulk: a CSV file with the columns id,label, or a JSONL file of "
                    '{"id", "label"} or {"id", "labels": [one per image]} objects. They are checked against the '
                    "production model's classes and written beside the servers' labels; `aimass monitor` joins "
                    "them to the captured requests of every replica. Nothing is imported when any row is wrong.")
    feedback_import.add_argument("file", type=Path)
    wire([(monitor, _monitor), (feedback_import, _feedback_import)])


def _feedback_import(args: argparse.Namespace) -> int:
    from aimass.capture.feedback import import_feedback, read_feedback_file
    from aimass.capture.store import open_capture_store
    from aimass.cli.options import config_from_args
    from aimass.registry import open_registry, production_card

    config = config_from_args(args, args.repo.resolve())
    registry = open_registry(config)
    found = production_card(registry)
    if found is None:
        raise AimassError(f"{registry.model_name} has no production version yet: labels judge a served model's "
                          "answers; deploy one first")
    items = read_feedback_file(args.file)
    store = open_capture_store(config, registry.model_name)
    key = import_feedback(items, found[1].class_names, store)
    print(f"imported {len(items)} labels ({sum(len(names) for _, names in items)} images) from {args.file} into "
          f"{store.store.description}/{key}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from aimass.capture.store import open_capture_store
    from aimass.cli.options import config_from_args
    from aimass.monitoring.report import build_monitor_report, parse_duration, read_capture, report_html
    from aimass.registry import open_registry

    repo = args.repo.resolve()
    config = _cluster_monitor_config(args, repo) if args.cluster else config_from_args(args, repo)
    since_text = args.since or config.monitor.since
    since = time.time() - parse_duration(since_text)
    registry = open_registry(config)
    store = open_capture_store(config, registry.model_name)
    read = read_capture(store, since)
    report = build_monitor_report(config, read, registry, store.description, since)
    page = args.report or repo / config.monitor.report
    _write_atomically(page, report_html(report).encode())
    _write_atomically(page.with_suffix(".json"), json.dumps(report.to_dict(), indent=2, default=str).encode())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for version in report.versions:
            accuracy = "no labels" if version.accuracy is None else f"live accuracy {version.accuracy:.4f}"
            latest = version.windows[-1].drift if version.windows else None
            drift = "no full window" if latest is None else (
                "drift in " + ", ".join(c.statistic for c in latest.drifted) if latest.drifted else "no drift")
            print(f"{version.version}: {version.requests} requests, {version.images} images, "
                  f"{version.labelled_images} labelled, {accuracy}; latest window: {drift}")
        print(f"report: {page} (JSON: {page.with_suffix('.json')})")
    if not report.breaches:
        print(report.verdict())
        return 0
    if not args.retrain:
        print(report.verdict())
        return BREACH_EXIT
    return _retrain(args, config, repo, store, registry, read, report, since_text)


def _retrain(args, config, repo, store, registry, read, report, since_text: str) -> int:
    from aimass.monitoring.retrain import (RetrainingRefused, build_retraining_data, check_may_start,
                                           local_run_is_alive, record_end, record_start, trigger_reason)

    reason = trigger_reason(report.breaches, since_text)
    try:
        check_may_start(store, config, _kfp_run_is_alive(config) if args.cluster else local_run_is_alive)
    except RetrainingRefused as refused:
        print(f"{report.verdict()}; {refused}")
        return 0
    retrain_config = config.model_copy(update={"validation": config.validation.model_copy(
        update={"drift_against_production": False})})
    try:
        if args.cluster:
            return _submit_retraining(args, retrain_config, store, registry, read, report, reason)
        data = build_retraining_data(config, repo, read)
    except RetrainingRefused as refused:
        print(f"{report.verdict()}; nothing started: {refused}")
        return BREACH_EXIT
    from aimass.lineage import current_git_commit
    from aimass.pipelines.local_run import run_pipeline_locally, timestamped_root
    from aimass.cli.run_summary import LiveRunView, print_run_summary

    print(f"new data version {data.data_md5} (data.dvc): captured images added {data.added}"
          + (f", {data.skipped} left out" if data.skipped else ""), flush=True)
    record_start(store, "local", reason, data.data_md5)
    try:
        with LiveRunView() as view:
            result = run_pipeline_locally(retrain_config, timestamped_root(repo / "runs"), current_git_commit(repo),
                                          verbose=False, watcher=view, trigger=("monitor", reason))
    except BaseException:
        record_end(store, "failed")
        raise
    record_end(store, "succeeded" if result.succeeded else "failed")
    print_run_summary(result)
    if not result.succeeded:
        failed = next((step for step in result.steps if step.status == "FAILURE"), None)
        raise AimassError(f"{report.verdict()}; the retraining run failed"
                          + (f" in {failed.name}: {failed.last_error_line() or 'see its log'}" if failed else ""))
    print(f"{report.verdict()}; retrained on data {data.data_md5} (trigger: monitor)")
    return 0


def _submit_retraining(args, config, store, registry, read, report, reason: str) -> int:
    from aimass import kubeflow
    from aimass.cli.cluster import pipeline_package
    from aimass.data.versions import fetch_data_version
    from aimass.monitoring.retrain import build_retraining_data, record_start

    production = registry.get("production")
    with tempfile.TemporaryDirectory(prefix="aimass-retrain-") as scratch:
        scratch_repo = fetch_data_version(Path(scratch), production.lineage["data_md5"], config.data)
        data = build_retraining_data(config.model_copy(update={"data": config.data.model_copy(
            update={"repo_dir": str(scratch_repo)})}), scratch_repo, read)
    commit = args.git_commit or production.lineage.get("git_commit", "unknown")
    run_name = f"aimass-monitor-{time.strftime('%Y%m%d-%H%M%S')}"
    client = kubeflow.connect(config.kubeflow)
    with pipeline_package(args, config) as package:
        run_id = kubeflow.submit(client, config.kubeflow, package, run_name, {
            "config_json": config.to_json(), "git_commit": commit, "data_version": data.data_md5,
            "trigger": "monitor", "trigger_reason": reason})
    record_start(store, run_name, reason, data.data_md5, {"run_id": run_id})
    print(f"{report.verdict()}; started run {run_name} ({run_id}) on data {data.data_md5} (pushed to "
          f"{config.data.remote_url}), commit {commit}")
    return 0


def _kfp_run_is_alive(config):
    def is_alive(state: dict) -> bool:
        from aimass import kubeflow

        if "run_id" not in state:
            return False
        return kubeflow.run_state(kubeflow.connect(config.kubeflow), state["run_id"]).state not in \
            kubeflow.FINAL_STATES
    return is_alive


def _cluster_monitor_config(args, repo: Path):
    from aimass.cli.cluster import cluster_config

    return cluster_config(args, repo)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as staging:
        staging.write(data)
    Path(staging.name).chmod(0o644)
    Path(staging.name).replace(path)
