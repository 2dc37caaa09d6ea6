"""poll_until: the one wait loop for runs, jobs, servers and served versions."""
import pytest

from aimass.polling import poll_until


def test_it_returns_the_first_answer_that_is_not_none():
    answers = iter([None, None, "ready"])
    assert poll_until(lambda: next(answers), timeout_seconds=5, interval_seconds=0,
                      timed_out=lambda: AssertionError("timed out")) == "ready"


def test_a_check_that_raises_stops_the_wait_at_once():
    calls = []

    def failed():
        calls.append(1)
        raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError, match="the job failed"):
        poll_until(failed, timeout_seconds=5, interval_seconds=0, timed_out=lambda: AssertionError("timed out"))
    assert len(calls) == 1


def test_after_the_timeout_it_raises_the_error_built_from_the_last_state_seen():
    seen = []

    def never():
        seen.append(len(seen))
        return None

    with pytest.raises(TimeoutError, match=r"last state \d+"):
        poll_until(never, timeout_seconds=0.05, interval_seconds=0.01,
                   timed_out=lambda: TimeoutError(f"last state {seen[-1]}"))
    assert len(seen) >= 2
