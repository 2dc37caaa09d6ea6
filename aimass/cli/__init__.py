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
import sys

from aimass.cli.cluster import add_cluster_commands
from aimass.cli.configuration import add_config_commands
from aimass.cli.data import add_data_commands
from aimass.cli.lineage import add_lineage_command
from aimass.cli.models import add_models_commands
from aimass.cli.monitoring import add_monitoring_commands
from aimass.cli.options import wire_repository_commands
from aimass.cli.pipeline import add_pipeline_commands
from aimass.cli.release import add_release_commands
from aimass.cli.serve import add_serve_command
from aimass.errors import AimassError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except AimassError as error:
        print(f"aimass: error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """Every command group lives in its own module of aimass/cli/ (data, pipeline, models, release and canary,
    lineage, monitoring, serve, cluster, configuration); this only puts them in `aimass --help`'s order."""
    parser = argparse.ArgumentParser(prog="aimass", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_data_commands(commands)
    add_pipeline_commands(commands)
    add_models_commands(commands)
    add_release_commands(commands)
    add_lineage_command(commands)
    add_monitoring_commands(commands, wire_repository_commands)
    add_serve_command(commands)
    add_cluster_commands(commands)
    add_config_commands(commands)
    return parser
