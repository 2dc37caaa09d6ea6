"""Where the served versions come from: the release (the embedded backend's or Helm's current revision), a pinned
registry version (what the chart passes, with its canary file), or a directory; and which model, and which canary
candidate, each wants served now."""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aimass.canary.plan import CanaryState
from aimass.config import AimassConfig
from aimass.errors import ArtifactIntegrityError
from aimass.registry import ModelRegistry, manifest_sha256, open_registry, open_registry_at
from aimass.releases import ReleaseError, open_release_backend
from aimass.serving.cache import RegistryCache
from aimass.serving.errors import ServingError


@dataclass(frozen=True)
class WantedCanary:
    version: str
    weight: int
    shadow: bool
    step: int
    mirror: bool
    fetch: Callable[[], Path]


@dataclass(frozen=True)
class WantedModel:
    version: str
    revision: int | None
    fetch: Callable[[], Path]  # returns a local, verified model directory
    canary: WantedCanary | None = None  # a candidate to route part of the traffic to (aimass/canary)


def wanted_canary(state: CanaryState | None, fetch: Callable[[str], Path]) -> WantedCanary | None:
    if state is None or not state.running:
        return None
    return WantedCanary(state.candidate_version, state.weight, state.shadow, state.step, state.mirror,
                        lambda: fetch(state.candidate_version))


class ModelSource(ABC):
    @abstractmethod
    def wanted(self) -> WantedModel | None:
        """The model that should be served now; None while there is none (nothing deployed yet)."""


class ReleaseSource(ModelSource):
    """Serve whatever the current revision of the release points to, pulled from the registry."""

    def __init__(self, config: AimassConfig, dataset_name: str | None = None):
        self.registry = open_registry(config, dataset_name)
        self.backend = open_release_backend(config, self.registry)
        self.cache = RegistryCache(self.registry, Path(config.data.repo_dir) / config.serving.cache_dir)

    def wanted(self) -> WantedModel | None:
        try:
            revision = self.backend.status()
        except ReleaseError:
            return None
        if revision.model_name != self.registry.model_name:
            # One release serves one model name: after a new data set was deployed, this server's name is stale.
            raise ServingError(f"release revision {revision.revision} serves {revision.model_name}, but this server "
                               f"serves {self.registry.model_name}: start `aimass serve` for {revision.model_name} "
                               "(or set registry.model_name)")
        # A server restarted mid-canary finds the canary here, in the release history, and routes as before.
        return WantedModel(revision.model_version, revision.revision,
                           lambda: self.cache.fetch(revision.model_version),
                           wanted_canary(revision.running_canary, self.cache.fetch))


class FixedVersionSource(ModelSource):
    """Serve one registry version: named on the command line, or pinned by a Helm revision as a storage URI plus
    the sha256 of the version's manifest (a registry whose record or files differ from that digest is refused)."""

    def __init__(self, registry: ModelRegistry, cache: RegistryCache, version_or_alias: str,
                 expected_manifest_sha256: str | None = None):
        self.registry = registry
        self.cache = cache
        self.version_or_alias = version_or_alias
        self.expected_manifest_sha256 = expected_manifest_sha256

    def wanted(self) -> WantedModel:
        version = self.registry.resolve(self.version_or_alias)
        return WantedModel(version, None, lambda: self._fetch(version))

    def _fetch(self, version: str) -> Path:
        expected = self.expected_manifest_sha256
        if expected is not None and (recorded := manifest_sha256(self.registry.get(version))) != expected:
            raise ArtifactIntegrityError(
                f"{self.registry.model_name} {version} in {self.registry.store.description} has a manifest sha256 of "
                f"{recorded}, but {expected} was pinned: refusing it (was the version re-uploaded, or the URI "
                "mixed up?)")
        return self.cache.fetch(version)  # every file against the record, and so against the pinned manifest


class CanaryFileSource(ModelSource):
    """A pinned version (the Helm chart's) plus the canary of the same Helm revision, read from the chart's
    ConfigMap file (values.canary), which the kubelet updates in place: a step restarts no pod."""

    def __init__(self, pinned: ModelSource, canary_file: Path, config: AimassConfig):
        self.pinned = pinned
        self.canary_file = canary_file
        self.config = config
        self._sources: dict[str, FixedVersionSource] = {}

    def wanted(self) -> WantedModel | None:
        wanted = self.pinned.wanted()
        state = self._canary()
        if wanted is None or state is None or not state.running:
            return wanted
        source = self._source(state)
        return dataclasses.replace(wanted, canary=wanted_canary(state, lambda version: source._fetch(version)))

    def _canary(self) -> CanaryState | None:
        try:
            values = json.loads(self.canary_file.read_text() or "{}")
        except FileNotFoundError:
            return None
        return CanaryState.from_dict(values) if values else None

    def _source(self, state: CanaryState) -> FixedVersionSource:
        key = f"{state.candidate_uri}@{state.candidate_sha256}"
        if key not in self._sources:
            registry, version = open_registry_at(state.candidate_uri, self.config)
            cache = RegistryCache(registry, Path(self.config.data.repo_dir) / self.config.serving.cache_dir)
            self._sources[key] = FixedVersionSource(registry, cache, version, state.candidate_sha256)
        return self._sources[key]


class DirectorySource(ModelSource):
    """Serve a model directory as it is (its own sha256 manifest is still checked)."""

    def __init__(self, model_dir: Path, version: str = "local"):
        self.model_dir = model_dir
        self.version = version

    def wanted(self) -> WantedModel:
        return WantedModel(self.version, None, lambda: self.model_dir)


def open_model_source(config: AimassConfig, model_version: str | None = None, model_dir: Path | None = None,
                      model_uri: str | None = None, model_sha256: str | None = None,
                      canary_file: Path | None = None) -> ModelSource:
    """The source `aimass serve` was asked for: a directory, a registry version, a pinned storage URI (what the
    Helm chart passes, with its canary file), or else the current release."""
    if model_dir is not None:
        return DirectorySource(model_dir)
    cache_dir = Path(config.data.repo_dir) / config.serving.cache_dir
    if model_uri is not None:
        registry, version = open_registry_at(model_uri, config)
        pinned = FixedVersionSource(registry, RegistryCache(registry, cache_dir), version, model_sha256)
        return CanaryFileSource(pinned, canary_file, config) if canary_file is not None else pinned
    if model_version is not None:
        registry = open_registry(config)
        return FixedVersionSource(registry, RegistryCache(registry, cache_dir), model_version, model_sha256)
    return ReleaseSource(config)
