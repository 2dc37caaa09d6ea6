"""What the server serves: the loaded model, where its versions come from (the release, a pinned registry version, a
directory), the local cache of pulled versions, the holder that swaps models, and the thread that follows the
release."""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aimass.canary.plan import CanaryState
from aimass.canary.traffic import ActiveCanary
from aimass.config import AimassConfig, ServingConfig
from aimass.data.preprocess import InputSpec, to_model_input
from aimass.errors import ArtifactIntegrityError
from aimass.integrity import sha256_file
from aimass.models.artifact import compile_for_inference, load_model
from aimass.models.card import is_quantized
from aimass.monitoring.reference import read_reference_outputs
from aimass.registry import ModelRegistry, ModelVersion, manifest_sha256, open_registry, open_registry_at
from aimass.releases import ReleaseError, open_release_backend
from aimass.serving.errors import ServingError
from aimass.serving.metrics import ServerMetrics

log = logging.getLogger("aimass.serving")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # registry version ("v3"), or "local" for a directory served as is
    revision: int | None  # the release revision that asked for it
    module: torch.nn.Module
    class_names: list[str]
    input_spec: InputSpec
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    about: dict = dataclasses.field(default_factory=dict)  # from the model card: data set, lineage, training
    data_profile: dict | None = None  # the training split's profile, from the model card (drift's reference)
    reference_outputs: np.ndarray | None = None  # probabilities on validation images, kept at registration

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes), float32."""
        logits = self.module(to_model_input(images, self.input_spec, self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def inference_device(wanted: str, int8: bool) -> torch.device:
    """`serving.device` for this model: int8 exports run x86 kernels, so only float models go to a GPU."""
    if wanted == "cuda":
        if int8:
            raise ServingError("serving.device=cuda, but this is an int8 model, whose kernels run on the CPU only; "
                               "use serving.device=auto or cpu")
        if not torch.cuda.is_available():
            raise ServingError("serving.device=cuda, but torch sees no CUDA device here; use auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() and not int8 else "cpu"
    return torch.device(wanted)


def load_served_model(name: str, version: str, revision: int | None, model_dir: Path,
                      compile_quantized: bool = True, device: str = "cpu") -> ServedModel:
    """Load a model directory (every sha256 checked) and prove it answers before anyone is sent to it.

    int8 models are compiled, as the compress stage measured them: eager execution of a quantised export runs
    the reference (de)quantise ops and is about 10x slower at batch 1 than the compiled int8 kernels
    (docs/PERFORMANCE.md). Compiling takes seconds, all of it here, in the warm-up, before the swap."""
    loaded = load_model(model_dir)
    int8 = is_quantized(loaded.card)
    target = inference_device(device, int8)
    module = loaded.module if target.type == "cpu" else loaded.module.to(target)
    if compile_quantized and int8:
        module = compile_for_inference(module)
    signature = loaded.signature
    card = loaded.card
    # A compressed model's card carries its teacher's training record, not a validation score of its own.
    measured_on = "this model" if "training" in card else "its teacher"
    about = {"dataset": card.get("dataset", {}).get("name"), "lineage": card.get("lineage", {}),
             "validation_accuracy": card.get("training", card.get("teacher_training", {})).get("best_validation_accuracy"),
             "validation_accuracy_of": measured_on, "compression": card.get("compression", {}).get("method")}
    served = ServedModel(name, version, revision, module, list(signature.class_names), signature.input_spec, target,
                         about, card.get("data_profile"), read_reference_outputs(model_dir))
    # The compiler specialises batch size 1 and guards int8 graphs to 2..15 and 16 and up: one warm-up per range,
    # or the first request of a new range stalls every request behind it for a recompilation (seconds).
    for batch in (1, 2, 16):
        warm_up = served.predict(np.zeros((batch, *signature.input_spec.shape), dtype=np.uint8))
        if warm_up.shape != (batch, len(served.class_names)) or not np.isfinite(warm_up).all():
            raise ArtifactIntegrityError(f"{name} {version} failed its warm-up prediction: got {warm_up.shape}")
    return served


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


class RegistryCache:
    """Pulled versions under `<cache>/<version>/`; a cached copy is reused only if every file still matches the
    registry record's sha256."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path):
        self.registry = registry
        self.cache_dir = cache_dir

    def fetch(self, version: str) -> Path:
        target = self.cache_dir / self.registry.model_name / version
        record = self.registry.get(version)
        if not self._is_intact(target, record):
            self.registry.pull(version, target)
        return target

    @staticmethod
    def _is_intact(directory: Path, record: ModelVersion) -> bool:
        return directory.is_dir() and all(
            (directory / name).is_file() and sha256_file(directory / name) == digest
            for name, digest in record.files.items())


class ModelHolder:
    """The model requests are answered with, and the swap to a new one."""

    KEEP_LOADED = 2  # the current model and the one before it, so that a rollback swaps at once

    def __init__(self, model_name: str, source: ModelSource, settings: ServingConfig, metrics: ServerMetrics):
        self.model_name = model_name
        self.source = source
        self.settings = settings
        self.retry_seconds = settings.load_retry_seconds
        self.metrics = metrics
        self.current: ServedModel | None = None
        self.canary: ActiveCanary | None = None  # the candidate part of the traffic goes to, during a canary
        self.last_error: str | None = None
        self._failed_at: dict[tuple[str, int | None], float] = {}
        self._recent: dict[str, ServedModel] = {}  # version -> loaded model, most recent last

    def refresh(self) -> None:
        """Load and swap in the wanted model (and canary candidate) if they differ from the current ones. Never
        raises: a failure leaves the current models serving and is reported."""
        try:
            wanted = self.source.wanted()
        except Exception as error:  # noqa: BLE001 (store or release backend unreachable: keep serving)
            self._report(f"cannot tell which model to serve: {error}")
            return
        if wanted is None:
            return
        self._follow_production(wanted)
        self._follow_canary(wanted.canary)

    def _follow_production(self, wanted: WantedModel) -> None:
        current = self.current
        if current and (current.version, current.revision) == (wanted.version, wanted.revision):
            return
        # A promoted candidate, or a rollback's version, was verified and warmed up when it was first loaded.
        loaded = self._recent.get(wanted.version)
        if loaded is None and self.canary is not None and self.canary.model.version == wanted.version:
            loaded = self.canary.model
        if loaded is not None:
            self._swap(dataclasses.replace(loaded, revision=wanted.revision))
            return
        served = self._load(wanted.version, wanted.revision, wanted.fetch)
        if served is not None:
            self._swap(served)

    def _follow_canary(self, wanted: WantedCanary | None) -> None:
        active = self.canary
        if wanted is None or self.current is None or wanted.version == self.current.version:
            if active is not None:
                self.canary = None  # nothing of the candidate stays in the serving path
                self.metrics.show_canary(None)
                promoted = self.current is not None and self.current.version == active.model.version
                self.metrics.canary_ended.labels("promoted" if promoted else "aborted").inc()
                log.info("canary of %s ended; %s alone serves", active.model.version, self.current.version)
            return
        if active is not None and active.model.version == wanted.version:
            model = active.model
        else:
            model = self._recent.get(wanted.version) or self._load(wanted.version, None, wanted.fetch, "canary")
            if model is None:
                return
            if mismatch := _signature_mismatch(self.current, model):
                self._report(f"canary {wanted.version} is not routed to: {mismatch}")
                return
        routed = ActiveCanary(model, wanted.weight, wanted.shadow, wanted.step, wanted.mirror)
        if active is None or active.model is not model or active.routing != routed.routing:
            self.canary = routed
            self.metrics.show_canary(routed)
            log.info("canary %s: %s", wanted.version, "shadow" if wanted.shadow else f"weight {wanted.weight}%")

    def _load(self, version: str, revision: int | None, fetch: Callable[[], Path],
              role: str = "production") -> ServedModel | None:
        key = (version, revision if role == "production" else role)
        if time.monotonic() - self._failed_at.get(key, -float("inf")) < self.retry_seconds:
            return None
        try:
            served = load_served_model(self.model_name, version, revision, fetch(), self.settings.compile_quantized,
                                       self.settings.device)
        except Exception as error:  # noqa: BLE001 (whatever breaks the new model, the old one keeps serving)
            self._failed_at[key] = time.monotonic()
            self.metrics.model_loads.labels(outcome="failure").inc()
            keeping = f"; still serving {self.current.version}" if self.current else ""
            what = f"canary candidate {version}" if role == "canary" else f"version {version} (revision {revision})"
            self._report(f"{what} was not loaded: {error}{keeping}")
            return None
        self.metrics.model_loads.labels(outcome="success").inc()
        return served

    def _swap(self, served: ServedModel) -> None:
        previous, self.current, self.last_error = self.current, served, None
        self._recent.pop(served.version, None)
        self._recent[served.version] = served
        while len(self._recent) > self.KEEP_LOADED:
            del self._recent[next(iter(self._recent))]
        # A loaded (and especially a compiled) model is a large, long-lived object graph; left to the collector,
        # every full collection walks it, stalling all requests for hundreds of ms (seen as p99 spikes under
        # load). Frozen objects are never scanned.
        gc.collect()
        gc.freeze()
        self.metrics.show_model(served, previous)
        log.info("serving %s %s (revision %s)", served.name, served.version, served.revision)

    def _report(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
        self.last_error = message


def _signature_mismatch(production: ServedModel, candidate: ServedModel) -> str | None:
    """Why two models cannot share one request stream (the request is parsed once, against production)."""
    if candidate.class_names != production.class_names:
        return (f"its classes ({', '.join(candidate.class_names)}) differ from production's "
                f"({', '.join(production.class_names)}); deploy it directly instead")
    if candidate.input_spec != production.input_spec:
        return "its input (shape or preprocessing) differs from production's; deploy it directly instead"
    return None


class ReleaseFollower:
    """Polls the model source from a daemon thread."""

    def __init__(self, holder: ModelHolder, poll_seconds: float):
        self.holder = holder
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aimass-release-follower", daemon=True)

    def start(self) -> None:
        self.holder.refresh()  # the first model loads before the server says it is ready
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.holder.refresh()


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


