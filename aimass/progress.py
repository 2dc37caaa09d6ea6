"""How far a pipeline step is, told to whoever runs it: one line on the step's output, `aimass-progress: TEXT`.

`aimass run` shows the latest such line beside the running step (pipelines/local_run.py picks them out of the step's
output); on a cluster they are ordinary lines of the pod's log. A line, not a side channel, because a step's output
is the one thing every runner (kfp.local, a container, a Kubernetes pod) carries.
"""
from __future__ import annotations

PREFIX = "aimass-progress: "


def report(text: str) -> None:
    print(PREFIX + text, flush=True)


def parse(line: str) -> str | None:
    """The progress a line of a step's output reports, or None for any other line."""
    return line[len(PREFIX):].strip() if line.startswith(PREFIX) else None
