"""`aimass release canary`: start a canary, walk it through its steps, judge each on its window of traffic, and
promote the candidate or roll it back. Every step, the promotion and an abort are release revisions (the release
backend's record_canary / promote_canary / abort_canary), so the history tells the whole story and a server that
restarts mid-canary routes as before.

The controller holds no state of its own that matters: stopped (Ctrl-C, a lost pod), the canary keeps serving at
its current step, `--resume` judges that step afresh, and `--abort` ends it by hand.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aimass.canary.analysis import (Snapshot, failed_check, measure_window, routing_reported, step_result,
                                    too_little_traffic)
from aimass.canary.plan import ABORTED, CanaryError, CanaryState, check_steps
from aimass.config import CanaryConfig
from aimass.registry import ModelRegistry, manifest_sha256
from aimass.releases import ReleaseBackend, Revision, check_canary_change

ABORTED_EXIT = 4  # documented: the canary was aborted (by a check, a timeout or by hand); production serves
NOTE_EVERY_SECONDS = 30  # a step still waiting says so on stderr, so that a quiet endpoint is not a silent one


@dataclass(frozen=True)
class Clock:
    """Time as the controller sees it (tests pass a faster sleep; nothing else is faked)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def plan_canary(backend: ReleaseBackend, registry: ModelRegistry, version_or_alias: str, settings: CanaryConfig,
                triggered_by: str, steps: tuple[int, ...] | None = None,
                shadow_first: bool | None = None) -> CanaryState:
    """The canary's first step (shadow, unless told otherwise), checked but not recorded: an unknown version,
    bad steps, a second canary, or a candidate production already serves are refused here."""
    record = registry.get(version_or_alias)
    production = backend.status()
    state = CanaryState(
        candidate_version=record.version, candidate_uri=registry.storage_uri(record.version),
        candidate_sha256=manifest_sha256(record), steps=check_steps(steps or settings.steps),
        shadow_first=settings.shadow_first if shadow_first is None else shadow_first, step=0,
        base_revision=production.revision, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        started_by=triggered_by, mirror=settings.mirror)
    check_canary_change(production, state)
    return state


def start_canary(backend: ReleaseBackend, state: CanaryState) -> Revision:
    """The first revision of the canary: production as it is, the candidate beside it."""
    return backend.record_canary(state, f"Canary {state.candidate_version} started: {state.step_label()}",
                                 state.started_by)


def abort_by_hand(backend: ReleaseBackend, triggered_by: str) -> Revision:
    state = backend.status().running_canary
    if state is None:
        raise CanaryError("no canary is running: `aimass release status` shows the release")
    return backend.abort_canary(state.ended(ABORTED, f"aborted by hand by {triggered_by}"), triggered_by)


class CanaryRun:
    """Walks a recorded canary through its steps; `run()` returns its final state (promoted or aborted)."""

    def __init__(self, backend: ReleaseBackend, state: CanaryState, settings: CanaryConfig,
                 read_metrics: Callable[[], Snapshot], triggered_by: str, say: Callable[[str], None] = print,
                 clock: Clock = Clock()):
        self.backend = backend
        self.state = state
        self.settings = settings
        self.read_metrics = read_metrics
        self.triggered_by = triggered_by
        self.say = say
        self.clock = clock
        self.poll = min(2.0, max(0.05, settings.step_seconds / 10))
        self.production = backend.status().model_version
        self._since = read_metrics()  # accuracy counts the labels of the canary from here on

    def run(self) -> CanaryState:
        try:
            while True:
                result = self._judge_step()
                if result is None:  # ended elsewhere (aborted by hand): the history already says so
                    return self._ended_elsewhere()
                self.say(self._step_line(result))
                judged = self.state.judged(result)
                if not result.passed:
                    return self._abort(judged, failed_check(result))
                if judged.step == self.state.step:  # the last step passed
                    return self._promote(judged)
                self.state = judged
                self.backend.record_canary(judged, f"Canary {judged.candidate_version} {judged.step_label()}: "
                                                   f"step {judged.step} passed", self.triggered_by)
        except CanaryError as error:
            if self._still_running():
                raise
            self.say(f"the canary of {self.state.candidate_version} was ended elsewhere ({error})")
            return self._ended_elsewhere()

    # ---- one step ----

    def _judge_step(self):
        started = noted = self.clock.now()
        while not routing_reported(self.read_metrics(), self.state):
            if not self._still_running():
                return None
            if self.clock.now() - started > self.settings.traffic_timeout_seconds:
                raise _RoutingNotReported(self.state)
            if self.clock.now() - noted >= NOTE_EVERY_SECONDS:
                noted = self.clock.now()
                _note(f"{self.state.step_label()}: waiting for the servers to route to {self.state.candidate_version}")
            self.clock.sleep(self.poll)
        window_start, opened = self.read_metrics(), self.clock.now()
        noted = opened
        while True:
            self.clock.sleep(self.poll)
            if not self._still_running():
                return None
            end = self.read_metrics()
            window = measure_window(window_start, end, self._since, (self.state.candidate_version,
                                                                      self.production))
            answered = window.answered(self.state.candidate_version)
            elapsed = self.clock.now() - opened
            if elapsed >= self.settings.step_seconds and answered >= self.settings.min_requests:
                return step_result(self.state, window, self.production, self.settings)
            if elapsed >= self.settings.traffic_timeout_seconds:
                return too_little_traffic(self.state, answered, elapsed, self.settings)
            if self.clock.now() - noted >= NOTE_EVERY_SECONDS:
                noted = self.clock.now()
                _note(f"{self.state.step_label()}: {answered:.0f} of {self.settings.min_requests} requests after "
                      f"{elapsed:.0f} s (the step aborts without them by {self.settings.traffic_timeout_seconds:g} s)")

    def _still_running(self) -> bool:
        running = self.backend.status().running_canary
        return running is not None and (running.candidate_version, running.started_at) == \
            (self.state.candidate_version, self.state.started_at)

    # ---- the verdict ----

    def _promote(self, state: CanaryState) -> CanaryState:
        revision = self.backend.promote_canary(state, self.triggered_by)
        self.say(f"promoted {state.candidate_version}: revision {revision.revision} serves it, after "
                 f"{len(state.results)} steps passed")
        return state.ended("promoted")

    def _abort(self, state: CanaryState, reason: str) -> CanaryState:
        aborted = state.ended(ABORTED, reason)
        revision = self.backend.abort_canary(aborted, self.triggered_by)
        self.say(f"aborted {state.candidate_version} at {state.step_label()}: {reason}; revision "
                 f"{revision.revision} serves {revision.model_version} alone")
        return aborted

    def _ended_elsewhere(self) -> CanaryState:
        current = self.backend.status()
        self.say(f"aborted {self.state.candidate_version}: the canary was ended elsewhere (revision "
                 f"{current.revision}: {current.description}); {current.model_version} serves")
        return self.state.ended(ABORTED, current.description)

    def _step_line(self, result) -> str:
        requests = ", ".join(f"{version} {count}" for version, count in result.requests.items())
        checks = "; ".join(_check_line(check) for check in result.checks)
        verdict = "passed" if result.passed else "FAILED"
        return f"{self.state.step_label()}: requests answered {requests}; {checks} -> {verdict}"


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_line(check: dict) -> str:
    verdict = "ok" if check["passed"] and check["judged"] else ("FAILED" if not check["passed"] else "not judged")
    return f"{check['name']} {check['summary']} [{verdict}]"


class _RoutingNotReported(CanaryError):
    def __init__(self, state: CanaryState):
        super().__init__(f"the servers did not report routing to {state.candidate_version} at "
                         f"{state.step_label()} within release.canary.traffic_timeout_seconds: is the server "
                         "running, and could it load the candidate? (its /v2/models/NAME shows load_error)")
        self.state = state


def run_canary(backend: ReleaseBackend, state: CanaryState, settings: CanaryConfig,
               read_metrics: Callable[[], Snapshot], triggered_by: str, say: Callable[[str], None] = print,
               clock: Clock = Clock()) -> CanaryState:
    """Walk `state` through its steps. What stops the analysis while the canary runs (servers that never route to
    the candidate, counters that cannot be read) aborts it: no candidate takes traffic unobserved."""
    runner = CanaryRun(backend, state, settings, read_metrics, triggered_by, say, clock)
    try:
        return runner.run()
    except CanaryError as error:
        return runner._abort(runner.state, str(error))
