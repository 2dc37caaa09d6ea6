"""The model requests are answered with (and the canary candidate beside it), the swap to a new one that never
interrupts serving, and the thread that follows the model source."""
from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aimass.canary.traffic import ActiveCanary
from aimass.config import ServingConfig
from aimass.serving.metrics import ServerMetrics
from aimass.serving.model import ServedModel, load_served_model
from aimass.serving.sources import ModelSource, WantedCanary, WantedModel

log = logging.getLogger("aimass.serving")


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
