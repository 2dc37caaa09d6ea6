"""One way to wait for something outside this process (a run, a job, a server, a served version): ask at an interval
until it answers, fails, or the time is up, and then say what was seen last."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

Answer = TypeVar("Answer")


def poll_until(check: Callable[[], Answer | None], timeout_seconds: float, interval_seconds: float,
               timed_out: Callable[[], Exception]) -> Answer:
    """Call `check` every `interval_seconds` until it returns something other than None, and return that.

    `check` raises to stop early (the job failed, the process exited). When `timeout_seconds` pass without an answer,
    `timed_out()` is raised: it is called only then, so its message can name the last state `check` saw.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        answer = check()
        if answer is not None:
            return answer
        if time.monotonic() >= deadline:
            raise timed_out()
        time.sleep(interval_seconds)
