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

The package: base (revisions, the interface, canary recording rules), embedded, helm; `open_release_backend` picks
the one `release.backend` names.
"""
from __future__ import annotations

from pathlib import Path

from aimass.config import AimassConfig
from aimass.registry import ModelRegistry
from aimass.releases.base import (DEPLOYED, NOTHING_DEPLOYED, SUPERSEDED, UNINSTALLED, ReleaseBackend, ReleaseError,
                                  Revision, check_canary_change, default_trigger, revision_lineage)
from aimass.releases.embedded import EmbeddedReleaseBackend
from aimass.releases.helm import HelmError, HelmReleaseBackend, chart_directory, chart_fullname

__all__ = ["DEPLOYED", "NOTHING_DEPLOYED", "SUPERSEDED", "UNINSTALLED", "EmbeddedReleaseBackend", "HelmError",
           "HelmReleaseBackend", "ReleaseBackend", "ReleaseError", "Revision", "chart_directory", "chart_fullname",
           "check_canary_change", "default_trigger", "open_release_backend", "revision_lineage"]


def open_release_backend(config: AimassConfig, registry: ModelRegistry) -> ReleaseBackend:
    """The release backend `config.release` describes."""
    if config.release.backend == "helm":
        return HelmReleaseBackend(config.release, registry, chart_directory(config), config.registry)
    return EmbeddedReleaseBackend(Path(config.data.repo_dir) / config.release.state_dir, config.release.name,
                                  registry)
