"""`aimass release`: deploy, roll back, history, status (Helm semantics), and the canary (canary.py)."""
from __future__ import annotations

import argparse

from aimass.cli.options import print_revision, release_backend_from_args, trigger_from_args, wire_repository_commands


def add_release_commands(commands) -> None:
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
    wire_repository_commands(commands_and_handlers)
    from aimass.cli.canary import add_canary_command

    add_canary_command(release_commands, wire_repository_commands)


def _release_deploy(args: argparse.Namespace) -> int:
    print_revision(release_backend_from_args(args).deploy(args.version, trigger_from_args(args)))
    return 0


def _release_rollback(args: argparse.Namespace) -> int:
    print_revision(release_backend_from_args(args).rollback(args.to, trigger_from_args(args)))
    return 0


def _release_history(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aimass.terminal import console

    table = Table(title="release history", title_justify="left")
    for column in ("revision", "updated (UTC)", "status", "model version", "description", "triggered by"):
        table.add_column(column)
    for revision in release_backend_from_args(args).history():
        table.add_row(str(revision.revision), revision.updated_at, revision.status, revision.model_version,
                      revision.description, revision.triggered_by)
    console().print(table)
    return 0


def _release_status(args: argparse.Namespace) -> int:
    from aimass.cli.canary import describe_canary

    revision = release_backend_from_args(args).status()
    print_revision(revision)
    if canary := describe_canary(revision):
        print(canary)
    return 0
