"""A canary's state, as each release revision of it records it, and how a request is routed by its id."""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace

from aimass.config import check_steps
from aimass.errors import CanaryError

SHADOW = 0  # the weight of a shadow step: the candidate answers in the background only
RUNNING, PROMOTED, ABORTED = "running", "promoted", "aborted"


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        return check_steps([int(part) for part in text.split(",") if part.strip()])
    except ValueError:
        raise CanaryError(f"--steps {text!r} is not a list of whole percentages, e.g. 10,50,100") from None


def routes_to_candidate(request_id: str, weight: int) -> bool:
    """Whether the candidate answers this request at `weight` percent. Decided by the id alone, so a retry with
    the same id lands on the same model; salted, so that it is independent of capture's sampling by id."""
    return weight > 0 and zlib.crc32(b"canary:" + request_id.encode()) % 100 < weight


@dataclass(frozen=True)
class StepResult:
    weight: int
    passed: bool
    checks: list[dict]  # Check.to_dict() of analysis.py
    requests: dict[str, int]  # version -> requests it answered in the window (routed and shadow)


@dataclass(frozen=True)
class CanaryState:
    """What a release revision of a canary records next to the production version it serves."""

    candidate_version: str
    candidate_uri: str  # where the server fetches it: a registry storage URI
    candidate_sha256: str  # the candidate's manifest sha256 (the server refuses anything else)
    steps: tuple[int, ...]  # weights after the shadow step, e.g. (10, 50, 100)
    shadow_first: bool
    step: int  # index into weights(); the step being served and judged
    base_revision: int  # the revision that served before the canary: what an abort rolls back to
    started_at: str
    started_by: str
    mirror: bool = True  # at weighted steps too, the other model answers every request in the background
    outcome: str = RUNNING
    reason: str = ""  # why it was aborted: the failing check with its value and threshold, or who aborted it
    results: list[StepResult] = field(default_factory=list)  # steps judged so far

    @property
    def weights(self) -> tuple[int, ...]:
        return ((SHADOW,) if self.shadow_first else ()) + tuple(self.steps)

    @property
    def weight(self) -> int:
        return self.weights[self.step] if self.outcome == RUNNING else 0

    @property
    def shadow(self) -> bool:
        return self.outcome == RUNNING and self.weight == SHADOW

    @property
    def running(self) -> bool:
        return self.outcome == RUNNING

    def step_label(self) -> str:
        weight = self.weights[self.step]  # the step's, also after the canary ended
        return f"step {self.step + 1}/{len(self.weights)} ({'shadow' if weight == SHADOW else f'weight {weight}%'})"

    def judged(self, result: StepResult) -> CanaryState:
        """This state with `result` added and, when it passed, the next step (there is one) in place."""
        moved = self.step + 1 if result.passed and self.step + 1 < len(self.weights) else self.step
        return replace(self, results=[*self.results, result], step=moved)

    def ended(self, outcome: str, reason: str = "") -> CanaryState:
        return replace(self, outcome=outcome, reason=reason)

    def to_dict(self) -> dict:
        as_dict = asdict(self)
        as_dict["steps"] = list(self.steps)
        return as_dict

    @classmethod
    def from_dict(cls, values: dict) -> CanaryState:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        known["steps"] = tuple(int(step) for step in known.get("steps", ()))
        known["results"] = [StepResult(**result) for result in known.get("results", [])]
        return cls(**known)
