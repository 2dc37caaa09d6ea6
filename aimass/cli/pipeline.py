"""`aimass run` (the whole DAG here, through kfp.local) and `aimass compile` (the YAML for the Kubeflow UI)."""
from __future__ import annotations

import argparse
from pathlib import Path

from aimass.cli.cluster import cluster_config
from aimass.cli.options import add_config_arguments, add_repo_argument, config_from_args
from aimass.errors import AimassError


def add_pipeline_commands(commands) -> None:
    run = commands.add_parser("run", help="run the whole DAG locally through kfp.local",
                              description="Run ingest -> validate data -> augment -> train -> compress -> "
                                          "evaluate -> gate -> bless and deploy (or reject) on this machine, each "
                                          "step in its own process, and print a summary of every step.")
    add_config_arguments(run)
    add_repo_argument(run)
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
    add_config_arguments(compile_, default_profile="full")
    compile_.add_argument("-o", "--output", type=Path, default=None,
                          help="output file (default: pipelines/compiled/training_pipeline.yaml)")
    compile_.set_defaults(handler=_compile)


def _run(args: argparse.Namespace) -> int:
    from aimass.data.card import DataCard
    from aimass.data.versions import ensure_pinned_data
    from aimass.lineage import current_git_commit
    from aimass.pipelines.local_run import run_pipeline_locally, timestamped_root
    from aimass.cli.run_summary import LiveRunView, print_run_summary

    repo = args.repo.resolve()
    config = config_from_args(args, repo)
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
    path = compile_pipeline(cluster_config(args), args.output or COMPILED_PIPELINE)
    print(f"compiled the pipeline to {path}")
    return 0
