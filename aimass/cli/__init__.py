"""The `aimass` command line.

Examples:
    aimass data import --source ~/photos    # a folder of class folders (or a CSV/JSONL manifest, IDX files)
    aimass data import                      # the demo data set, Fashion-MNIST, into data/, pinned in data.dvc
    aimass data push --set data.remote_url=s3://bucket/dvc   # upload it to the DVC remote (pull: download)
    aimass run --profile tiny               # the whole DAG locally through kfp.local, in about a minute
    aimass run --set train.epochs=5         # quick profile with one override
    aimass compile -o pipeline.yaml         # the YAML to upload in the Kubeflow UI
    aimass config show --profile full       # the resolved configuration as JSON
    aimass models list                      # model versions in the registry, with their aliases
    aimass models promote v3 --alias production
    aimass release deploy production        # a new release revision serving that version
    aimass release rollback --to 2          # serve revision 2's model again, as a new revision
    aimass release canary v4 --steps 10,50,100   # v4 beside production, promoted or rolled back by its checks
    aimass serve                            # OIP v2 server on :8080 following the release
    aimass serve --model-version v3 --port 9000  # one registry version, ignoring the release
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

from aimass.errors import AimassError

DATASET_DIR_VARIABLE = "AIMASS_FASHION_MNIST_DIR"


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except AimassError as error:
        print(f"aimass: error: {error}", file=sys.stderr)
        return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimass", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    data = commands.add_parser("data", help="manage the versioned data set",
                               description="Manage the data set that data.dvc pins.")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    data_import = data_commands.add_parser(
        "import", help="import an image data set into data/ and pin it with DVC",
        description="Check every image of SOURCE (each is decoded), copy the originals into data/ with an index and "
                    "a data card, and `dvc add data`, so data.dvc pins the imported version. Layouts: a folder of "
                    "class folders, optionally under train/validation/test folders (imagefolder); a CSV or JSONL "
                    "file with file_name|path|image, label and optional split columns (manifest); MNIST-style IDX "
                    "files (idx). On any problem nothing changes: data/ and data.dvc stay as they were. Importing "
                    "the same files twice gives the same DVC hash.")
    data_import.add_argument("--source", type=Path, default=None,
                             help=f"the data set (default: the Fashion-MNIST demo, ${DATASET_DIR_VARIABLE} or "
                                  "/usr/share/datasets/fashion-mnist)")
    data_import.add_argument("--format", default="auto", choices=["auto", "imagefolder", "manifest", "idx"],
                             help="layout of --source (default: detected)")
    data_import.add_argument("--name", default=None,
                             help="the data set's name, which the model is registered under (default: the "
                                  "source folder's name)")
    data_import.add_argument("--skip-bad-images", action="store_true",
                             help="leave out files that do not decode, listing them in the data card, instead of "
                                  "refusing the import")
    _add_config_arguments(data_import)
    _add_repo_argument(data_import)
    data_import.set_defaults(handler=_data_import)
    data_push = data_commands.add_parser(
        "push", help="upload the pinned data version to the DVC remote",
        description="Upload the data version data.dvc pins to the DVC remote data.remote_url (S3/MinIO at "
                    "data.remote_endpoint; credentials from $AIMASS_S3_ACCESS_KEY/$AIMASS_S3_SECRET_KEY or "
                    ".dvc/config.local).")
    data_pull = data_commands.add_parser(
        "pull", help="download the pinned data version from the DVC remote",
        description="Make data/ hold exactly the version data.dvc pins, downloading from the DVC remote what the "
                    "local cache lacks.")
    _wire_repository_commands([(data_push, _data_push), (data_pull, _data_pull)])

    run = commands.add_parser("run", help="run the whole DAG locally through kfp.local",
                              description="Run ingest -> validate data -> augment -> train -> compress -> "
                                          "evaluate -> gate -> bless and deploy (or reject) on this machine, each "
                                          "step in its own process, and print a summary of every step.")
    _add_config_arguments(run)
    _add_repo_argument(run)
    run.add_argument("--summary-markdown", type=Path, default=None, metavar="FILE",
                     help="also write the summary as Markdown (what CI posts on a pull request)")
    run.add_argument("--pipeline-root", type=Path, default=None,
                     help="where artifacts go (default: runs/<timestamp> in the repository)")
    run.add_argument("--verbose", action="store_true",
                     help="also print every step's whole output and kfp.local's own lines (always in "
                          "runs/<timestamp>/<run>/logs/<step>.log)")
    run.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                     help="subprocess: each step in a process of this Python environment (default); docker: each "
                          "step in a container of the project image (`make image`), through Docker or podman")
    run.set_defaults(handler=_run)

    compile_ = commands.add_parser("compile", help="compile the pipeline YAML for the Kubeflow UI (cluster backends)",
                                   description="Write the KFP v2 pipeline spec; its default parameters come from "
                                               "the chosen profile (default: full, the GPU profile).")
    _add_config_arguments(compile_, default_profile="full")
    compile_.add_argument("-o", "--output", type=Path, default=None,
                          help="output file (default: pipelines/compiled/training_pipeline.yaml)")
    compile_.set_defaults(handler=_compile)

    _add_models_commands(commands)
    _add_release_commands(commands)
    _add_lineage_command(commands)
    from aimass.cli.monitoring import add_monitoring_commands

    add_monitoring_commands(commands, _wire_repository_commands)
    _add_serve_command(commands)
    _add_kubeflow_commands(commands)

    config = commands.add_parser("config", help="inspect the configuration",
                                 description="Inspect the resolved configuration.")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    show = config_commands.add_parser("show", help="print the resolved configuration as JSON",
                                      description="Print the configuration a run would use, after the profile "
                                                  "and --set overrides, as JSON.")
    _add_config_arguments(show)
    show.set_defaults(handler=_config_show)
    return parser


def _add_models_commands(commands) -> None:
    models = commands.add_parser("models", help="the model registry: versions and aliases",
                                 description="Inspect the model registry (registry.* settings; local folder by "
                                             "default) and move aliases.")
    model_commands = models.add_subparsers(title="models commands", metavar="COMMAND")
    models_list = model_commands.add_parser("list", help="every version with its accuracy and aliases",
                                            description="List every version, oldest first, with aliases.")
    show_version = model_commands.add_parser("show", help="one version's record as JSON",
                                             description="Print a version's record: files and sha256, lineage, "
                                                         "metrics, creation time.")
    show_version.add_argument("version", help="v<N> or an alias such as production")
    promote = model_commands.add_parser("promote", help="point an alias at a version",
                                        description="Point an alias (production, staging, ...) at a version. "
                                                    "Versions never change; aliases move.")
    promote.add_argument("version", help="v<N> or an alias")
    promote.add_argument("--alias", required=True, help="e.g. production")
    push = model_commands.add_parser("push", help="publish a model directory as the next version",
                                     description="Upload a model directory (its sha256 manifest is checked "
                                                 "first) as the next immutable version. The pipeline's deploy "
                                                 "step does this for every blessed model.")
    push.add_argument("model_dir", type=Path, help="a model directory written by aimass (model.json, manifest.json)")
    _wire_repository_commands([(models_list, _models_list), (show_version, _models_show),
                               (promote, _models_promote), (push, _models_push)])


def _add_release_commands(commands) -> None:
    release = commands.add_parser("release", help="deploy, roll back and inspect releases (Helm semantics)",
                                  description="Every deploy or rollback is a new numbered revision recording the "
                                              "model version, its lineage, who triggered it and when.")
    release_commands = release.add_subparsers(title="release commands", metavar="COMMAND")
    deploy = release_commands.add_parser("deploy", help="serve a model version as a new revision",
                                         description="Create a revision serving VERSION (v<N> or an alias).")
    deploy.add_argument("version", help="v<N> or an alias such as production")
    rollback = release_commands.add_parser("rollback", help="serve an earlier revision's model again",
                                           description="Create a revision serving the model of revision --to "
                                                       "(default: the one before the current), as helm rollback.")
    rollback.add_argument("--to", type=int, default=None, metavar="REVISION")
    history = release_commands.add_parser("history", help="every revision, oldest first",
                                          description="List every revision of the release.")
    status = release_commands.add_parser("status", help="the deployed revision and where its model came from",
                                         description="Print the deployed revision with the model's lineage.")
    commands_and_handlers = [(deploy, _release_deploy), (rollback, _release_rollback),
                             (history, _release_history), (status, _release_status)]
    for command, _ in commands_and_handlers:
        command.add_argument("--triggered-by", default=None, help="recorded as the trigger (default: user@host)")
    _wire_repository_commands(commands_and_handlers)
    from aimass.cli.canary import add_canary_command

    add_canary_command(release_commands, _wire_repository_commands)


def _add_kubeflow_commands(commands) -> None:
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
    _wire_repository_commands([(submit, _submit), (create, _schedule_create)], default_profile="full")
    _wire_repository_commands([(runs, _runs), (schedule_list, _schedule_list), (delete, _schedule_delete)])


def _add_lineage_command(commands) -> None:
    lineage = commands.add_parser(
        "lineage", help="which data, code and run made a model version or a release revision",
        description="Print the data version (DVC md5), git commit, pipeline run, parent version and gate metrics "
                    "of a model version, or of the model a release revision served.")
    target = lineage.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", help="v<N> or an alias such as production")
    target.add_argument("--release", type=int, metavar="REVISION", help="a release revision (see release history)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    _wire_repository_commands([(lineage, _lineage)])


def _add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve the released model over the Open Inference Protocol v2 (REST)",
        description="Serve /v2/health/{live,ready}, /v2/models/NAME[/ready|/infer] and /metrics. By default the "
                    "server follows the release: each new revision's model is pulled, sha256-checked, warmed up "
                    "and swapped in while requests keep flowing. A bearer token is required when "
                    "$AIMASS_SERVING_TOKEN or serving.token_file is set. Settings: serving.* (aimass config show).")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--model-version", default=None, metavar="VERSION",
                        help="serve this registry version or alias only, ignoring the release")
    source.add_argument("--model-dir", type=Path, default=None, help="serve this model directory as it is")
    source.add_argument("--model-uri", default=None, metavar="URI",
                        help="serve the version at s3://BUCKET/models/NAME/versions/vN (what the Helm chart passes)")
    serve.add_argument("--model-sha256", default=None, metavar="HEX", type=_sha256_argument,
                       help="refuse the version unless its manifest.json has this sha256 (with --model-version/-uri)")
    serve.add_argument("--canary-file", type=Path, default=None, metavar="PATH",
                       help="with --model-uri: the canary of the same Helm revision, re-read as it changes (the "
                            "chart mounts values.canary there)")
    serve.add_argument("--host", default=None, help="address to listen on (default: serving.host)")
    serve.add_argument("--port", type=int, default=None, help="port (default: serving.port; 0 = any free port)")
    _wire_repository_commands([(serve, _serve)])


def _wire_repository_commands(commands_and_handlers, default_profile: str = "quick") -> None:
    """Commands that act on the registry or releases of a repository take --profile/--set and --repo."""
    for command, handler in commands_and_handlers:
        _add_config_arguments(command, default_profile)
        _add_repo_argument(command)
        command.set_defaults(handler=handler)


def _add_config_arguments(parser: argparse.ArgumentParser, default_profile: str = "quick") -> None:
    parser.add_argument("--profile", default=default_profile, choices=["tiny", "quick", "full"],
                        help=f"configuration profile (default: {default_profile})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.epochs=5 (repeatable)")


def _add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the aimass/DVC repository (default: .)")


def _data_import(args: argparse.Namespace) -> int:
    from aimass.data.fashion_mnist import DEFAULT_SOURCE_DIR
    from aimass.data.importing import ImportSettings, import_dataset
    from aimass.data.versions import track_data

    source = args.source or Path(os.environ.get(DATASET_DIR_VARIABLE) or DEFAULT_SOURCE_DIR)
    repo = args.repo.resolve()
    config = _load_config(args, repo, with_dataset=False)
    settings = ImportSettings(min_images_per_class=config.data.min_images_per_class,
                              skip_bad_images=args.skip_bad_images)
    card = import_dataset(source, repo / config.data.dataset_dir, args.format, args.name, settings)
    md5 = track_data(repo, config.data.dataset_dir)
    counts = ", ".join(f"{name} {count}" for name, count in card.splits.items())
    skipped = f"; left out {len(card.quarantined)} unreadable files (see data/dataset.json)" if card.quarantined else ""
    print(f"imported {card.name} from {source} as {card.source_format}: {len(card.class_names)} classes "
          f"({', '.join(card.class_names[:10])}{', ...' if len(card.class_names) > 10 else ''}), {counts}"
          f"{skipped}; data.dvc pins {md5}")
    return 0


def _data_push(args: argparse.Namespace) -> int:
    from aimass.data.versions import pinned_data_md5, push_data

    repo = args.repo.resolve()
    config = _load_config(args, repo)
    uploaded = push_data(repo, config.data)
    print(f"pushed data version {pinned_data_md5(repo, config.data.dvc_file)} to {config.data.remote_url} "
          f"({uploaded} files uploaded)")
    return 0


def _data_pull(args: argparse.Namespace) -> int:
    from aimass.data.versions import pull_data

    repo = args.repo.resolve()
    config = _load_config(args, repo)
    print(f"pulled data version {pull_data(repo, config.data)} from {config.data.remote_url}")
    return 0


def _load_config(args: argparse.Namespace, repo: Path | None = None, with_dataset: bool = True):
    """The configuration for --profile and --set; the model's name defaults to the imported data set's."""
    from aimass.config import load_config
    from aimass.data.card import DataCard, model_name_for
    from aimass.errors import DataVersionError

    overrides = list(args.overrides)
    if repo is not None and not any(o.startswith("data.repo_dir=") for o in overrides):
        overrides.insert(0, f"data.repo_dir={repo}")
    config = load_config(args.profile, overrides)
    if with_dataset and repo is not None and config.registry.model_name is None:
        try:
            card = DataCard.read(Path(config.data.repo_dir) / config.data.dataset_dir)
        except DataVersionError:
            return config  # no data set imported: commands that need a model name say so
        config = load_config(args.profile, [*overrides, f"registry.model_name={model_name_for(card.name)}"])
    return config


def _run(args: argparse.Namespace) -> int:
    from aimass.data.card import DataCard
    from aimass.data.versions import ensure_pinned_data
    from aimass.lineage import current_git_commit
    from aimass.pipelines.local_run import run_pipeline_locally, timestamped_root
    from aimass.cli.run_summary import LiveRunView, print_run_summary

    repo = args.repo.resolve()
    config = _load_config(args, repo)
    # Before the DAG starts: without an imported data set, say so here rather than from inside ingest.
    ensure_pinned_data(repo, config.data.dvc_file)
    DataCard.read(repo / config.data.dataset_dir)
    pipeline_root = args.pipeline_root or timestamped_root(repo / "runs")
    with LiveRunView() as view:
        result = run_pipeline_locally(config, pipeline_root.resolve(), current_git_commit(repo), verbose=args.verbose,
                                      watcher=view, runner=args.runner)
    print_run_summary(result)
    if args.summary_markdown is not None:
        from aimass.cli.run_summary import markdown_run_summary

        args.summary_markdown.write_text(markdown_run_summary(result, config.profile))
    if not result.succeeded:
        failed = next((step for step in result.steps if step.status == "FAILURE"), None)
        if failed is None:
            raise AimassError("the pipeline did not finish: see the steps above")
        raise AimassError(f"step {failed.name} failed: {failed.last_error_line() or 'see its log'} (log: {failed.log})")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from aimass.pipelines.compile import COMPILED_PIPELINE, compile_pipeline

    # The compiled pipeline runs on a cluster: registry on MinIO, releases through Helm, unless --set says otherwise.
    path = compile_pipeline(_cluster_config(args), args.output or COMPILED_PIPELINE)
    print(f"compiled the pipeline to {path}")
    return 0


def _registry(args: argparse.Namespace):
    from aimass.registry import open_registry

    return open_registry(_load_config(args, args.repo.resolve()))


def _models_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aimass.terminal import console

    registry = _registry(args)
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        aliases_by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{registry.model_name} in {registry.store.description}", title_justify="left")
    for column in ("version", "created (UTC)", "accuracy (test, or validation)", "data md5", "git commit", "aliases"):
        table.add_column(column)
    for record in registry.versions():
        accuracy = record.metrics.get("accuracy")
        shown = f"{accuracy:.4f}" if accuracy is not None else (
            f"{record.metrics['validation_accuracy']:.4f} (val.)" if "validation_accuracy" in record.metrics else "")
        table.add_row(record.version, record.created_at, shown,
                      record.lineage.get("data_md5", "")[:12], record.lineage.get("git_commit", "")[:12],
                      ", ".join(sorted(aliases_by_version.get(record.version, []))))
    console().print(table)
    return 0


def _models_show(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from aimass.registry import manifest_sha256

    registry = _registry(args)
    record = registry.get(args.version)
    # The storage URI and manifest sha256 are what pin this version in a Helm release's values.
    shown = {**asdict(record), "storage_uri": registry.storage_uri(record.version),
             "manifest_sha256": manifest_sha256(record)}
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def _models_push(args: argparse.Namespace) -> int:
    import json

    from aimass.models.card import CARD_FILE

    # What the model's own card measured (the deploy step records the gate's test metrics instead).
    card_path = args.model_dir / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    training = card.get("training", card.get("teacher_training", {}))
    metrics = {"validation_accuracy": training["best_validation_accuracy"]} \
        if "best_validation_accuracy" in training and "training" in card else {}
    record = _registry(args).push(args.model_dir, metrics=metrics)
    print(f"pushed {args.model_dir} as {record.name} {record.version}")
    return 0


def _models_promote(args: argparse.Namespace) -> int:
    record = _registry(args).promote(args.version, args.alias)
    print(f"{args.alias} -> {record.version}")
    return 0


def _release_backend(args: argparse.Namespace):
    from aimass.registry import open_registry
    from aimass.releases import open_release_backend

    config = _load_config(args, args.repo.resolve())
    return open_release_backend(config, open_registry(config))


def _trigger(args: argparse.Namespace) -> str:
    from aimass.releases import default_trigger

    return args.triggered_by or default_trigger()


def _print_revision(revision) -> None:
    lineage = ", ".join(f"{key} {value}" for key, value in sorted(revision.lineage.items()))
    print(f"revision {revision.revision}: {revision.model_name} {revision.model_version} ({revision.status}, "
          f"{revision.description}, by {revision.triggered_by} at {revision.updated_at}); lineage: {lineage}")


def _release_deploy(args: argparse.Namespace) -> int:
    _print_revision(_release_backend(args).deploy(args.version, _trigger(args)))
    return 0


def _release_rollback(args: argparse.Namespace) -> int:
    _print_revision(_release_backend(args).rollback(args.to, _trigger(args)))
    return 0


def _release_history(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aimass.terminal import console

    table = Table(title="release history", title_justify="left")
    for column in ("revision", "updated (UTC)", "status", "model version", "description", "triggered by"):
        table.add_column(column)
    for revision in _release_backend(args).history():
        table.add_row(str(revision.revision), revision.updated_at, revision.status, revision.model_version,
                      revision.description, revision.triggered_by)
    console().print(table)
    return 0


def _release_status(args: argparse.Namespace) -> int:
    from aimass.cli.canary import describe_canary

    revision = _release_backend(args).status()
    _print_revision(revision)
    if canary := describe_canary(revision):
        print(canary)
    return 0


def _run_pins(args: argparse.Namespace, repo: Path, config) -> dict[str, str]:
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
def _pipeline_package(args: argparse.Namespace, config):
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


def _cluster_config(args: argparse.Namespace, repo: Path | None = None):
    """The configuration a cluster run gets: CLUSTER_OVERRIDES, then --set."""
    from aimass.config import CLUSTER_OVERRIDES, load_config

    located = [f"data.repo_dir={repo}"] if repo is not None else []
    return load_config(args.profile, [*located, *CLUSTER_OVERRIDES, *args.overrides])


def _submit(args: argparse.Namespace) -> int:
    import time as clock

    from aimass import kubeflow

    repo = args.repo.resolve()
    config = _cluster_config(args, repo)
    pins = _run_pins(args, repo, config)
    run_name = args.run_name or f"aimass-{pins['git_commit'][:8]}-{clock.strftime('%Y%m%d-%H%M%S')}"
    client = kubeflow.connect(config.kubeflow)
    with _pipeline_package(args, config) as package:
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

    config = _load_config(args)
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
    config = _cluster_config(args, repo)
    cron = kubeflow.kfp_cron(args.cron)  # refuse a bad expression before anything is compiled or sent
    pins = _run_pins(args, repo, config)
    client = kubeflow.connect(config.kubeflow)
    if args.replace:
        for existing in kubeflow.schedules(client, config.kubeflow):
            if existing.name == args.name:
                kubeflow.delete_schedule(client, existing.schedule_id)
                print(f"deleted recurring run {existing.name} ({existing.schedule_id})")
    with _pipeline_package(args, config) as package:
        created = kubeflow.create_schedule(client, config.kubeflow, package, args.name, cron, pins, args.catch_up)
    print(f"created recurring run {created.name} ({created.schedule_id}): cron '{created.cron}', at most one run at "
          f"a time, {'catching up' if args.catch_up else 'no catch-up'}; commit {pins['git_commit']}")
    return 0


def _schedule_list(args: argparse.Namespace) -> int:
    from aimass import kubeflow

    config = _load_config(args)
    for item in kubeflow.schedules(kubeflow.connect(config.kubeflow), config.kubeflow):
        print(f"{item.schedule_id}  {item.name}  cron '{item.cron}'  {item.status}  max {item.max_concurrency}  "
              f"{'no catch-up' if item.no_catchup else 'catch-up'}")
    return 0


def _schedule_delete(args: argparse.Namespace) -> int:
    from aimass import kubeflow

    config = _load_config(args)
    kubeflow.delete_schedule(kubeflow.connect(config.kubeflow), args.schedule_id)
    print(f"deleted recurring run {args.schedule_id}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from aimass.registry import open_registry
    from aimass.releases import ReleaseError, open_release_backend

    config = _load_config(args, args.repo.resolve())
    registry = open_registry(config)
    revision = None
    if args.release is not None:
        history = open_release_backend(config, registry).history()
        revision = next((r for r in history if r.revision == args.release), None)
        if revision is None:
            raise ReleaseError(f"no release revision {args.release}; revisions: "
                               f"{', '.join(str(r.revision) for r in history) or 'none'}")
    record = registry.get(revision.model_version if revision else args.version)
    if args.json:
        print(json.dumps({"model": asdict(record), "revision": asdict(revision) if revision else None}, indent=2))
        return 0
    lineage = record.lineage
    rows = [("data version (DVC md5)", lineage.get("data_md5", "unknown")),
            ("git commit", lineage.get("git_commit", "unknown")),
            ("pipeline run", f"{lineage.get('run_name', 'unknown')} (id {lineage.get('run_id', 'unknown')})"),
            ("base checkpoint", _describe_checkpoint(lineage.get("base_checkpoint"))),
            ("parent version", record.parent_version or "none"),
            ("trigger", lineage.get("trigger", "manual") + (f": {lineage['trigger_reason']}"
                                                            if lineage.get("trigger_reason") else "")),
            ("gate metrics", ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.metrics.items())) or "none"),
            ("created", record.created_at)]
    if revision is not None:
        rows.insert(0, ("release revision", f"{revision.revision}: {revision.description} ({revision.status}, by "
                                            f"{revision.triggered_by} at {revision.updated_at})"))
    print(f"{record.name} {record.version}")
    for label, value in rows:
        print(f"  {label:<22} {value}")
    return 0


def _describe_checkpoint(checkpoint: dict | None) -> str:
    """Where a model's pretrained weights came from: `hf:SOURCE (pretrained weights), FILE sha256 DIGEST, ...`."""
    if not checkpoint:
        return "none (the built-in CNN, from random weights)"
    files = ", ".join(f"{name} sha256 {digest}" for name, digest in sorted(checkpoint["files"].items()))
    weights = "pretrained weights" if checkpoint["pretrained"] else "random weights"
    return f"{checkpoint['source']} ({weights}); {files}"


def _serve(args: argparse.Namespace) -> int:
    from aimass.serving import open_model_source, serve_forever

    # A model directory is named after its own card's data set, not after the data set the repository holds.
    config = _load_config(args, args.repo.resolve(), with_dataset=args.model_dir is None)
    listen = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    config = config.with_serving(**listen)
    if args.model_sha256 and not (args.model_version or args.model_uri):
        raise AimassError("--model-sha256 pins a registry version: give --model-version or --model-uri with it")
    if args.model_version:
        from aimass.registry import check_version_or_alias

        check_version_or_alias(args.model_version)  # a server that can never become ready must not start
    from aimass.registry import registered_model_name

    if args.canary_file and not args.model_uri:
        raise AimassError("--canary-file goes with --model-uri (the Helm chart's pinned version); a server that "
                          "follows the release reads its canary from the release history")
    source = open_model_source(config, args.model_version, args.model_dir, args.model_uri, args.model_sha256,
                               args.canary_file)
    name = registered_model_name(config, _dataset_of_model(args.model_dir) if args.model_dir else None)
    serve_forever(config, name, source, lambda url: print(f"serving {name} at {url}/v2/models/{name}/infer", flush=True))
    return 0


def _dataset_of_model(model_dir: Path) -> str | None:
    """The data set a model directory was trained on, as its card records it (a directory has no registry name)."""
    import json

    from aimass.models.card import CARD_FILE

    card = model_dir / CARD_FILE
    return json.loads(card.read_text()).get("dataset", {}).get("name") if card.is_file() else None


def _sha256_argument(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256: 64 lowercase hex digits")
    return text


def _config_show(args: argparse.Namespace) -> int:
    from aimass.config import config_summary

    print(config_summary(_load_config(args)))
    return 0
