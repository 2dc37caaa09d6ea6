"""Releases with Helm's semantics, on the embedded backend: every deploy or rollback is a new numbered revision.

A revision records the model version it serves, that version's lineage, what triggered it and when. Rolling back to
revision N creates a new revision serving N's model version, described "Rollback to N" (as `helm rollback` does);
the revision that served before is marked superseded, never deleted.

Two backends:
    embedded  the history as one JSON file per release, rewritten atomically under a lock, so concurrent commands
              cannot lose a revision; `aimass serve` follows it. For local runs and tests.
    helm      each revision is a Helm revision of helm/aimass-serving whose values pin one model version (storage URI
              and manifest sha256); deploy = `helm upgrade --install` that waits for the new pods and rolls back on
              failure, rollback = `helm rollback`, history = `helm history` joined with each revision's values.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import socket
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from aimass.config import PROJECT_IMAGE, AimassConfig, RegistryConfig, ReleaseConfig
from aimass.errors import AimassError
from aimass.registry import ModelRegistry, ModelVersion, manifest_sha256

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


class EmbeddedReleaseBackend(ReleaseBackend):
    """The release history as `<state_dir>/<release>.json`, for local runs and tests."""

    def __init__(self, state_dir: Path, release: str, registry: ModelRegistry):
        self.path = Path(state_dir) / f"{release}.json"
        self.registry = registry

    def deploy(self, model_version: str, triggered_by: str) -> Revision:
        record = self.registry.get(model_version)  # refuses unknown versions before anything changes
        with self._locked_history() as revisions:
            description = "Upgrade complete" if _deployed(revisions) else "Install complete"
            return self._append(revisions, record.version, revision_lineage(record), description, triggered_by)

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


def _deployed_entry(entries: list[dict]) -> dict | None:
    return next((entry for entry in reversed(entries) if entry["status"] == DEPLOYED), None)


def _deployed(revisions: list[Revision]) -> Revision | None:
    return next((r for r in reversed(revisions) if r.status == DEPLOYED), None)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class HelmError(ReleaseError):
    """A helm command failed; the message holds the command and helm's own words."""


HELM_ROLLBACK_NOTE = "(helm rollback records no trigger)"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the source tree, or /opt/aimass in the image


class HelmReleaseBackend(ReleaseBackend):
    """Revisions of the serving chart on a cluster, through the helm CLI (Helm 3 or 4, detected)."""

    def __init__(self, settings: ReleaseConfig, registry: ModelRegistry, chart_dir: Path, storage: RegistryConfig):
        self.settings = settings
        self.registry = registry
        self.chart_dir = chart_dir
        self.storage_values = {"endpoint": settings.storage_endpoint or storage.s3_endpoint,
                               "secure": storage.s3_secure}
        self.endpoint_url = f"http://{chart_fullname(settings.name)}.{settings.namespace}.svc:8080"
        self._major_version: int | None = None

    def deploy(self, model_version: str, triggered_by: str) -> Revision:
        record = self.registry.get(model_version)  # refuses unknown versions before helm runs
        values = self.model_values(record, triggered_by)
        with tempfile.NamedTemporaryFile("w", prefix="aimass-model-", suffix=".yaml") as model_values:
            yaml.safe_dump(values, model_values, sort_keys=True)
            model_values.flush()
            site_values = [argument for path in self.settings.values_files for argument in ("-f", path)]
            self._helm("upgrade", "--install", self.settings.name, str(self.chart_dir), *self._wait_flags(),
                       self._undo_on_failure_flag(), "--history-max", str(self.settings.history_max),
                       *site_values, "-f", model_values.name,  # the model's values last: they win
                       failure_note="the previous revision keeps serving (helm rolled the failed one back)")
        return self._latest()

    def model_values(self, record: ModelVersion, triggered_by: str) -> dict:
        """The values that pin `record` in a revision: model, lineage, trigger, the image and the store."""
        storage_uri = self.registry.storage_uri(record.version)
        if not storage_uri.startswith("s3://"):
            raise ReleaseError(f"the Helm backend serves models from the cluster's object store, but the registry "
                               f"is {self.registry.store.description}: set registry.backend=s3 (and s3_endpoint)")
        repository, tag = PROJECT_IMAGE.rsplit(":", 1)
        return {
            "model": {"name": record.name, "version": record.version, "storageUri": storage_uri,
                      "sha256": manifest_sha256(record)},
            "lineage": revision_lineage(record),
            "triggeredBy": triggered_by,
            "image": {"repository": repository, "tag": tag},
            "storage": self.storage_values,
        }

    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision:
        entries = self._entries()
        current = _deployed_entry(entries)
        if current is None:
            raise ReleaseError("nothing is deployed yet, so there is nothing to roll back")
        target = to_revision if to_revision is not None else current["revision"] - 1
        if not any(entry["revision"] == target for entry in entries):
            known = ", ".join(str(entry["revision"]) for entry in entries)
            raise ReleaseError(f"no revision {target} to roll back to; revisions helm keeps: {known} "
                               f"(release.history_max={self.settings.history_max})")
        self._helm("rollback", self.settings.name, str(target), *self._wait_flags(),
                   "--history-max", str(self.settings.history_max))
        return self._latest()

    def uninstall(self, triggered_by: str) -> Revision:
        if _deployed_entry(self._entries()) is None:
            raise ReleaseError("nothing is deployed, so there is nothing to uninstall")
        self._helm("uninstall", self.settings.name, "--keep-history", *self._wait_flags(),
                   "--description", f"Uninstalled by {triggered_by}")
        return self._latest()

    def history(self) -> list[Revision]:
        return [self._revision(entry) for entry in self._entries()]

    def status(self) -> Revision:
        # One `helm get values` for the deployed revision, not one per revision: the server polls this.
        deployed = _deployed_entry(self._entries())
        if deployed is None:
            raise ReleaseError(NOTHING_DEPLOYED)
        return self._revision(deployed)

    def _latest(self) -> Revision:
        return self._revision(self._entries()[-1])

    def _entries(self) -> list[dict]:
        """`helm history -o json`, oldest first; [] for a release helm has never seen."""
        try:
            entries = json.loads(self._helm("history", self.settings.name, "--max", "256", "-o", "json"))
        except HelmError as error:
            if "not found" in str(error):
                return []
            raise
        return sorted(entries, key=lambda entry: entry["revision"])

    def _revision(self, entry: dict) -> Revision:
        values = json.loads(self._helm("get", "values", self.settings.name, "--revision", str(entry["revision"]),
                                       "-o", "json")) or {}
        model = values.get("model", {})
        rolled_back = entry.get("rollback_revision") or entry["description"].startswith("Rollback to")
        return Revision(
            revision=entry["revision"], model_name=model.get("name", "?"), model_version=model.get("version", "?"),
            lineage=dict(values.get("lineage", {})), status=entry["status"], description=entry["description"],
            triggered_by=HELM_ROLLBACK_NOTE if rolled_back else values.get("triggeredBy", ""),
            updated_at=entry.get("updated", ""))

    # ---- the helm CLI ----

    def _helm(self, *arguments: str, failure_note: str = "") -> str:
        command = [self.settings.helm_binary, *arguments, "--namespace", self.settings.namespace]
        if self.settings.kube_context:
            command += ["--kube-context", self.settings.kube_context]
        if arguments[0] in ("upgrade", "rollback", "uninstall"):
            command += ["--timeout", f"{self.settings.timeout_seconds}s"]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, check=False,
                                      timeout=self.settings.timeout_seconds + 60)
        except FileNotFoundError:
            raise ReleaseError(f"{self.settings.helm_binary!r} not found: install helm (`make k8s-tools` puts it in "
                               ".venv/bin) or set release.helm_binary") from None
        except subprocess.TimeoutExpired:
            raise HelmError(f"`{' '.join(command)}` did not finish within {self.settings.timeout_seconds + 60} s; "
                            f"{failure_note or 'check the release with helm status'}") from None
        if finished.returncode != 0:
            note = f"; {failure_note}" if failure_note else ""
            raise HelmError(f"`{' '.join(command)}` failed (exit {finished.returncode}): "
                            f"{finished.stderr.strip() or finished.stdout.strip()}{note}")
        return finished.stdout

    def _major(self) -> int:
        if self._major_version is None:
            version = self._helm("version", "--template", "{{.Version}}").strip()
            match = re.match(r"v?(\d+)\.", version)
            if match is None or int(match.group(1)) < 3:
                raise ReleaseError(f"helm {version!r} is not supported: aimass needs Helm 3 or 4")
            self._major_version = int(match.group(1))
        return self._major_version

    def _wait_flags(self) -> list[str]:
        # Helm 4 waits with kstatus ("watcher"); Helm 3's --wait is a plain flag.
        return ["--wait=watcher"] if self._major() >= 4 else ["--wait"]

    def _undo_on_failure_flag(self) -> str:
        # Helm 4 renamed --atomic to --rollback-on-failure; both restore the previous revision if the new one fails.
        return "--rollback-on-failure" if self._major() >= 4 else "--atomic"


def chart_fullname(release_name: str, chart_name: str = "aimass-serving") -> str:
    """The name the chart gives its Service and Deployment (its `aimass-serving.fullname` helper)."""
    full = release_name if chart_name in release_name else f"{release_name}-{chart_name}"
    return full[:63].rstrip("-")


def chart_directory(config: AimassConfig) -> Path:
    """`release.chart` as an absolute folder: as given, under the repository, or under the installed project."""
    configured = Path(config.release.chart)
    candidates = [configured] if configured.is_absolute() else [Path(config.data.repo_dir) / configured,
                                                                  _PROJECT_ROOT / configured]
    for candidate in candidates:
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise ReleaseError(f"no Helm chart at release.chart={config.release.chart!r} (looked in "
                       f"{', '.join(str(candidate) for candidate in candidates)})")


def open_release_backend(config: AimassConfig, registry: ModelRegistry) -> ReleaseBackend:
    """The release backend `config.release` describes."""
    if config.release.backend == "helm":
        return HelmReleaseBackend(config.release, registry, chart_directory(config), config.registry)
    return EmbeddedReleaseBackend(Path(config.data.repo_dir) / config.release.state_dir, config.release.name,
                                  registry)
