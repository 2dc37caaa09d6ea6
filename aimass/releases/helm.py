"""The Helm release backend: each revision is a Helm revision of helm/aimass-serving whose values pin one model
version (storage URI and manifest sha256); deploy = `helm upgrade --install` that waits for the new pods and rolls
back on failure (release.wait_for_ready; off, helm returns once the API server accepted the objects), rollback =
`helm rollback`, history = `helm history` joined with each revision's values. A canary step changes only
`values.canary`, which the pods read from a mounted ConfigMap."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from aimass.canary.plan import PROMOTED, CanaryState
from aimass.config import PROJECT_IMAGE, AimassConfig, RegistryConfig, ReleaseConfig
from aimass.registry import ModelRegistry, ModelVersion, manifest_sha256
from aimass.releases.base import (NOTHING_DEPLOYED, ReleaseBackend, ReleaseError, Revision, abort_description,
                                  canary_lineage, check_canary_change, deployed_entry, promotion_description,
                                  revision_lineage)


class HelmError(ReleaseError):
    """A helm command failed; the message holds the command and helm's own words."""


HELM_ROLLBACK_NOTE = "(helm rollback records no trigger)"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the source tree, or /opt/aimass in the image


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

    def deploy(self, model_version: str, triggered_by: str, extra_lineage: dict[str, str] | None = None,
               canary: dict | None = None, description: str | None = None) -> Revision:
        record = self.registry.get(model_version)  # refuses unknown versions before helm runs
        values = self.model_values(record, triggered_by)
        values["lineage"].update(extra_lineage or {})
        values["canary"] = canary or {}  # a deploy ends any canary: the server routes to production alone
        described = ["--description", description[:512]] if description else []
        with tempfile.NamedTemporaryFile("w", prefix="aimass-model-", suffix=".yaml") as model_values:
            yaml.safe_dump(values, model_values, sort_keys=True)
            model_values.flush()
            site_values = [argument for path in self.settings.values_files for argument in ("-f", path)]
            self._helm("upgrade", "--install", self.settings.name, str(self.chart_dir), *self._wait_flags(),
                       *self._undo_on_failure_flags(), "--history-max", str(self.settings.history_max),
                       *site_values, "-f", model_values.name, *described,  # the model's values last: they win
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

    def record_canary(self, state: CanaryState, description: str, triggered_by: str) -> Revision:
        self.registry.get(state.candidate_version)
        current = check_canary_change(self._deployed_revision(), state)
        self._upgrade_values(current.revision, {"canary": state.to_dict()}, description)
        return self._latest()

    def promote_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        check_canary_change(self._deployed_revision(), state)
        promoted = state.ended(PROMOTED)
        return self.deploy(state.candidate_version, triggered_by, extra_lineage=canary_lineage(promoted),
                           canary=promoted.to_dict(), description=promotion_description(promoted))

    def abort_canary(self, state: CanaryState, triggered_by: str) -> Revision:
        """The abort recorded as a revision of its own (weight 0, the reason in its description, so that `helm
        history` says why), then `helm rollback` to the revision that served before the canary."""
        current = check_canary_change(self._deployed_revision(), state)
        self._upgrade_values(current.revision, {"canary": state.to_dict()}, abort_description(state))
        self._helm("rollback", self.settings.name, str(state.base_revision), *self._wait_flags(),
                   "--history-max", str(self.settings.history_max))
        return self._latest()

    def _deployed_revision(self) -> Revision | None:
        deployed = deployed_entry(self._entries())
        return self._revision(deployed) if deployed is not None else None

    def _upgrade_values(self, revision: int, changes: dict, description: str) -> None:
        """A new revision with `revision`'s values and `changes` (as `--reuse-values`, but explicit, so that the
        values file is the whole truth of the revision). Only values.canary changes: the pod template (its
        triggeredBy and lineage annotations included) stays as it is, so a canary step restarts no pod."""
        values = json.loads(self._helm("get", "values", self.settings.name, "--revision", str(revision),
                                       "-o", "json")) or {}
        with tempfile.NamedTemporaryFile("w", prefix="aimass-canary-", suffix=".yaml") as values_file:
            yaml.safe_dump(values | changes, values_file, sort_keys=True)
            values_file.flush()
            self._helm("upgrade", self.settings.name, str(self.chart_dir), *self._wait_flags(),
                       *self._undo_on_failure_flags(), "--history-max", str(self.settings.history_max),
                       "-f", values_file.name, "--description", description[:512],
                       failure_note="the previous revision keeps serving (helm rolled the failed one back)")

    def rollback(self, to_revision: int | None, triggered_by: str) -> Revision:
        entries = self._entries()
        current = deployed_entry(entries)
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
        if deployed_entry(self._entries()) is None:
            raise ReleaseError("nothing is deployed, so there is nothing to uninstall")
        self._helm("uninstall", self.settings.name, "--keep-history", *self._wait_flags(),
                   "--description", f"Uninstalled by {triggered_by}")
        return self._latest()

    def history(self) -> list[Revision]:
        return [self._revision(entry) for entry in self._entries()]

    def status(self) -> Revision:
        # One `helm get values` for the deployed revision, not one per revision: the server polls this.
        deployed = deployed_entry(self._entries())
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
            triggered_by=HELM_ROLLBACK_NOTE if rolled_back else _helm_trigger(values, entry["description"]),
            updated_at=entry.get("updated", ""), canary=values.get("canary") or None)

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
        if not self.settings.wait_for_ready:
            return []
        # Helm 4 waits with kstatus ("watcher"); Helm 3's --wait is a plain flag.
        return ["--wait=watcher"] if self._major() >= 4 else ["--wait"]

    def _undo_on_failure_flags(self) -> list[str]:
        # Helm 4 renamed --atomic to --rollback-on-failure; both restore the previous revision if the new one fails,
        # and both imply waiting: a revision that is not waited for has no failure to undo.
        if not self.settings.wait_for_ready:
            return []
        return ["--rollback-on-failure"] if self._major() >= 4 else ["--atomic"]


def _helm_trigger(values: dict, description: str) -> str:
    """A canary step keeps the pod template's triggeredBy (so no pod restarts): its trigger is the canary's."""
    canary = values.get("canary") or {}
    if canary and description.startswith("Canary ") and " promoted " not in description:
        return canary.get("started_by", "")
    return values.get("triggeredBy", "")


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
