"""The embedded release backend: the history as one JSON file per release, rewritten atomically under a lock, so
concurrent commands cannot lose a revision; `aimass serve` follows it. For local runs and tests."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from aimass.canary.plan import PROMOTED, CanaryState
from aimass.registry import ModelRegistry
from aimass.releases.base import (DEPLOYED, SUPERSEDED, UNINSTALLED, ReleaseBackend, ReleaseError, Revision,
                                  abort_description, canary_lineage, check_canary_change, latest_deployed,
                                  promotion_description, revision_lineage, utc_now)


class EmbeddedReleaseBackend(ReleaseBackend):
    """The release history as `<state_dir>/<release>.json`, for local runs and tests."""

    def __init__(self, state_dir: Path, release: str, registry: ModelRegistry):
        self.path = Path(state_dir) / f"{release}.json"
        self.registry = registry

    def deploy(self, model_version: str, triggered_by: str) -> Revision:
        record = self.registry.get(model_version)  # refuses unknown versions before anything changes
        with self._locked_history() as revisions:
            description = "Upgrade complete" if latest_deployed(revisions) else "Install complete"
            return self._append(revisions, record.version, revision_lineage(record), description, triggered_by)

    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision:
        with self._locked_history() as revisions:
            current = latest_deployed(revisions)
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
            current = latest_deployed(revisions)
            if current is None:
                raise ReleaseError("nothing is deployed, so there is nothing to uninstall")
            uninstalled = replace(current, status=UNINSTALLED, description="Uninstallation complete",
                                  triggered_by=triggered_by, updated_at=utc_now())
            revisions[revisions.index(current)] = uninstalled
            return uninstalled

    def history(self) -> list[Revision]:
        if not self.path.is_file():
            return []
        return [Revision(**entry) for entry in json.loads(self.path.read_text())]

    def record_canary(self, state: CanaryState, description: str, triggered_by: str) -> Revision:
        self.registry.get(state.candidate_version)
        with self._locked_history() as revisions:
            current = check_canary_change(latest_deployed(revisions), state)
            return self._append(revisions, current.model_version, current.lineage, description, triggered_by,
                                canary=state.to_dict())

    def promote_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        record = self.registry.get(state.candidate_version)
        with self._locked_history() as revisions:
            check_canary_change(latest_deployed(revisions), state)
            promoted = state.ended(PROMOTED)
            return self._append(revisions, record.version, revision_lineage(record) | canary_lineage(promoted),
                                promotion_description(promoted), triggered_by, canary=promoted.to_dict())

    def abort_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        with self._locked_history() as revisions:
            current = check_canary_change(latest_deployed(revisions), state)
            return self._append(revisions, current.model_version, current.lineage, abort_description(state),
                                triggered_by, canary=state.to_dict())

    def _append(self, revisions: list[Revision], version: str, lineage: dict, description: str,
                triggered_by: str, canary: dict | None = None) -> Revision:
        revisions[:] = [replace(r, status=SUPERSEDED) if r.status == DEPLOYED else r for r in revisions]
        revision = Revision(
            revision=len(revisions) + 1, model_name=self.registry.model_name, model_version=version,
            lineage=dict(lineage), status=DEPLOYED, description=description, triggered_by=triggered_by,
            updated_at=utc_now(), canary=canary)
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
