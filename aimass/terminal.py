"""The rich console the CLI prints tables with."""
import sys

from rich.console import Console

PIPED_WIDTH = 200  # rich assumes 80 columns off a terminal, which folds tables in logs and CI output


def console() -> Console:
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
