"""What every release backend is: numbered revisions with Helm's semantics (a rollback is a new revision), the
interface the backends implement, and the rules for recording a canary's steps on top of the deployed revision."""
from __future__ import annotations

import getpass
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

from aimass.canary.plan import CanaryError, CanaryState
from aimass.errors import AimassError
from aimass.registry import ModelVersion

DEPLOYED = "deployed"
SUPERSEDED = "superseded"
UNINSTALLED = "uninstalled"
NOTHING_DEPLOYED = "nothing is deployed yet: `aimass release deploy VERSION` first"


class ReleaseError(AimassError):
    """A release operation was refused: nothing deployed yet, unknown revision, unknown model version."""


@dataclass(frozen=True)
class Revision:
    revision: int
    model_name: str
    model_version: str
    lineage: dict[str, str]
    status: str  # deployed (at most one revision), superseded, or uninstalled
    description: str  # "Install complete", "Upgrade complete", "Rollback to 3"
    triggered_by: str  # who or what: "alice@laptop", "pipeline run aimass-training-..."
    updated_at: str  # UTC, ISO 8601
    canary: dict | None = None  # CanaryState.to_dict() of a canary step, its promotion or its abort

    @property
    def canary_state(self) -> CanaryState | None:
        return CanaryState.from_dict(self.canary) if self.canary else None

    @property
    def running_canary(self) -> CanaryState | None:
        state = self.canary_state
        return state if state is not None and state.running else None


class ReleaseBackend(ABC):
    # Where the release is served for callers inside the cluster; None: nothing serves it until `aimass serve` runs.
    endpoint_url: str | None = None

    @abstractmethod
    def deploy(self, model_version: str, triggered_by: str) -> Revision: ...

    @abstractmethod
    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision: ...

    @abstractmethod
    def uninstall(self, triggered_by: str) -> Revision:
        """Stop serving (history kept, as `helm uninstall --keep-history`): what a failed first install leaves."""

    @abstractmethod
    def history(self) -> list[Revision]: ...

    # ---- canaries (aimass/canary): each step, the promotion and an abort are revisions of their own ----

    @abstractmethod
    def record_canary(self, state: CanaryState, description: str, triggered_by: str) -> Revision:
        """A revision serving production as it is, with the canary `state` beside it (its candidate and weight).
        A canary at its first step is refused while another runs; a later step is refused unless this canary
        still runs (it was aborted by hand), so that nothing is changed behind an operator's back."""

    @abstractmethod
    def promote_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        """A revision serving the candidate as production, the canary's analysis in its lineage."""

    @abstractmethod
    def abort_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        """Production alone again, the aborted canary (outcome and reason) recorded in the history."""

    def status(self) -> Revision:
        deployed = [revision for revision in self.history() if revision.status == DEPLOYED]
        if not deployed:
            raise ReleaseError(NOTHING_DEPLOYED)
        return deployed[-1]


def revision_lineage(record: ModelVersion) -> dict[str, str]:
    """What a revision records of its model, so that it answers "which data and code?" on its own: the version's
    lineage (data md5, git commit, pipeline run id and name), its parent version and the gate's metrics."""
    lineage = {key: str(value) for key, value in record.lineage.items()}
    lineage["parent_version"] = record.parent_version or "none"
    lineage.update({f"gate_{name}": f"{value:.4f}" for name, value in sorted(record.metrics.items())})
    return lineage


def default_trigger() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def check_canary_change(current: Revision | None, state: CanaryState) -> Revision:
    """The deployed revision, if `state` may be recorded on top of it (see ReleaseBackend.record_canary)."""
    if current is None:
        raise CanaryError(f"nothing is deployed yet, so {state.candidate_version} has no production to be "
                          "compared with: `aimass release deploy VERSION` first")
    running = current.running_canary
    starting = state.step == 0 and not state.results and state.running
    if starting and running is not None:
        raise CanaryError(f"a canary of {running.candidate_version} is running (revision {current.revision}, "
                          f"{running.step_label()}): wait for its verdict or stop it with "
                          "`aimass release canary --abort`")
    if starting and state.candidate_version == current.model_version:
        raise CanaryError(f"{state.candidate_version} is production already (revision {current.revision}): a "
                          "canary compares another version with it")
    if not starting and (running is None or running.candidate_version != state.candidate_version
                         or running.started_at != state.started_at):
        raise CanaryError(f"the canary of {state.candidate_version} is no longer running (revision "
                          f"{current.revision}: {current.description}); nothing was changed")
    return current


def canary_lineage(state: CanaryState) -> dict[str, str]:
    """What a promoted revision records of the canary that judged it: each step's weight, traffic and checks."""
    steps = [f"{'shadow' if result.weight == 0 else f'{result.weight}%'}: "
             + ", ".join(f"{check['name']} {check['summary']}" for check in result.checks)
             for result in state.results]
    return {"canary_from_revision": str(state.base_revision), "canary_started_at": state.started_at,
            "canary_steps": " | ".join(steps) or "none"}


def promotion_description(state: CanaryState) -> str:
    return f"Canary {state.candidate_version} promoted after {len(state.results)} steps"


def abort_description(state: CanaryState) -> str:
    return f"Canary {state.candidate_version} aborted at {state.step_label()}: {state.reason}"


def deployed_entry(entries: list[dict]) -> dict | None:
    return next((entry for entry in reversed(entries) if entry["status"] == DEPLOYED), None)


def latest_deployed(revisions: list[Revision]) -> Revision | None:
    return next((r for r in reversed(revisions) if r.status == DEPLOYED), None)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
