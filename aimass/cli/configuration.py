"""`aimass config show`: the configuration a run would use."""
from __future__ import annotations

import argparse

from aimass.cli.options import add_config_arguments, config_from_args


def add_config_commands(commands) -> None:
    config = commands.add_parser("config", help="inspect the configuration",
                                 description="Inspect the resolved configuration.")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    show = config_commands.add_parser("show", help="print the resolved configuration as JSON",
                                      description="Print the configuration a run would use, after the profile "
                                                  "and --set overrides, as JSON.")
    add_config_arguments(show)
    show.set_defaults(handler=_config_show)


def _config_show(args: argparse.Namespace) -> int:
    from aimass.config import config_summary

    print(config_summary(config_from_args(args)))
    return 0
