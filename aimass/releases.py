"""Releases with Helm's semantics, on the embedded backend: every deploy or rollback is a new numbered revision.

A revision records the model version it serves, that version's lineage, what triggered it and when. Rolling back to
revision N creates a new revision serving N's model version, described "Rollback to N" (as `helm rollback` does);
the revision that served before is marked superseded, never deleted. The embedded backend keeps the history in one
JSON file per release, rewritten atomically under a lock, so concurrent commands cannot lose a revision. The Helm
backend (a later issue) implements the same interface with the helm CLI.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from aimass.config import AimassConfig
from aimass.errors import AimassError
from aimass.registry import ModelRegistry

DEPLOYED = "deployed"
SUPERSEDED = "superseded"
UNINSTALLED = "uninstalled"


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


class ReleaseBackend(ABC):
    @abstractmethod
    def deploy(self, model_version: str, triggered_by: str) -> Revision: ...

    @abstractmethod
    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision: ...

    @abstractmethod
    def uninstall(self, triggered_by: str) -> Revision:
        """Stop serving (history kept, as `helm uninstall --keep-history`): what a failed first install leaves."""

    @abstractmethod
    def history(self) -> list[Revision]: ...

    def status(self) -> Revision:
        deployed = [revision for revision in self.history() if revision.status == DEPLOYED]
        if not deployed:
            raise ReleaseError("nothing is deployed yet: `aimass release deploy VERSION` first")
        return deployed[-1]


def default_trigger() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class EmbeddedReleaseBackend(ReleaseBackend):
    """The release history as `<state_dir>/<release>.json`, for local runs and tests."""

    def __init__(self, state_dir: Path, release: str, registry: ModelRegistry):
        self.path = Path(state_dir) / f"{release}.json"
        self.registry = registry

    def deploy(self, model_version: str, triggered_by: str) -> Revision:
        record = self.registry.get(model_version)  # refuses unknown versions before anything changes
        with self._locked_history() as revisions:
            description = "Upgrade complete" if _deployed(revisions) else "Install complete"
            return self._append(revisions, record.version, record.lineage, description, triggered_by)

    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision:
        with self._locked_history() as revisions:
            current = _deployed(revisions)
            if current is None:
                raise ReleaseError("nothing is deployed yet, so there is nothing to roll back")
            target_number = to_revision if to_revision is not None else current.revision - 1
            target = next((r for r in revisions if r.revision == target_number), None)
            if target is None:
                known = ", ".join(str(r.revision) for r in revisions)
                raise ReleaseError(f"no revision {target_number} to roll back to; revisions: {known}")
            return self._append(revisions, target.model_version, target.lineage,
                                f"Rollback to {target.revision}", triggered_by)

    def uninstall(self, triggered_by: str) -> Revision:
        with self._locked_history() as revisions:
            current = _deployed(revisions)
            if current is None:
                raise ReleaseError("nothing is deployed, so there is nothing to uninstall")
            uninstalled = replace(current, status=UNINSTALLED, description="Uninstallation complete",
                                  triggered_by=triggered_by, updated_at=_now())
            revisions[revisions.index(current)] = uninstalled
            return uninstalled

    def history(self) -> list[Revision]:
        if not self.path.is_file():
            return []
        return [Revision(**entry) for entry in json.loads(self.path.read_text())]

    def _append(self, revisions: list[Revision], version: str, lineage: dict, description: str,
                triggered_by: str) -> Revision:
        revisions[:] = [replace(r, status=SUPERSEDED) if r.status == DEPLOYED else r for r in revisions]
        revision = Revision(
            revision=len(revisions) + 1, model_name=self.registry.model_name, model_version=version,
            lineage=dict(lineage), status=DEPLOYED, description=description, triggered_by=triggered_by,
            updated_at=_now())
        revisions.append(revision)
        return revision

    @contextmanager
    def _locked_history(self) -> Iterator[list[Revision]]:
        """Read, let the caller change, and atomically rewrite the history, holding an exclusive lock throughout.
        If the caller raises, the file is left as it was."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            revisions = self.history()
            yield revisions
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False) as staging:
                json.dump([asdict(r) for r in revisions], staging, indent=2)
            os.replace(staging.name, self.path)


def _deployed(revisions: list[Revision]) -> Revision | None:
    return next((r for r in reversed(revisions) if r.status == DEPLOYED), None)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_release_backend(config: AimassConfig, registry: ModelRegistry) -> ReleaseBackend:
    """The release backend `config.release` describes."""
    return EmbeddedReleaseBackend(Path(config.data.repo_dir) / config.release.state_dir, config.release.name,
                                  registry)
