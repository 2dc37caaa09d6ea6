"""The server's side of a canary: which model answers a request, and the other model's answer in the background
(shadow and mirrored traffic), compared with the answer the caller got."""
from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass

import numpy as np

from aimass.canary.plan import routes_to_candidate

log = logging.getLogger("aimass.canary")


@dataclass(frozen=True, eq=False)
class ActiveCanary:
    """The candidate a server routes to, as the release's current revision asks."""

    model: object  # ServedModel of aimass/serving/model.py
    weight: int  # percent of requests it answers; 0 in the shadow step
    shadow: bool
    step: int
    mirror: bool  # at weighted steps too, the other model answers every request in the background

    @property
    def routing(self) -> tuple:
        return self.weight, self.shadow, self.step, self.mirror

    def answers(self, request_id: str) -> bool:
        return routes_to_candidate(request_id, self.weight)

    def compares(self) -> bool:
        return self.shadow or self.mirror


def choose_model(production, canary: ActiveCanary | None, request_id: str):
    """(the model that answers this request, the model that answers it again in the background or None)."""
    if canary is None:
        return production, None
    if canary.answers(request_id):
        return canary.model, production if canary.compares() else None
    return production, canary.model if canary.compares() else None


@dataclass(frozen=True)
class _Mirrored:
    request_id: str
    model: object
    images: np.ndarray
    sources: np.ndarray
    answered: np.ndarray  # the class indices the caller was given


class ShadowRunner:
    """Answers requests again with the other model on a thread of its own, after the caller has its answer: a
    bounded queue (a full one drops the request and counts it), so the background never slows the foreground."""

    def __init__(self, metrics, monitor, max_queue: int):
        self.metrics = metrics
        self.monitor = monitor
        self._queue: queue.Queue[_Mirrored | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="aimass-shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass
        self._thread.join(timeout=10)

    def offer(self, request_id: str, model, images: np.ndarray, sources: np.ndarray,
              answered_probabilities: np.ndarray) -> None:
        try:
            self._queue.put_nowait(_Mirrored(request_id, model, images, sources,
                                             answered_probabilities.argmax(axis=1)))
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything offered so far was answered (tests and shutdown)."""
        done = threading.Event()
        self._queue.put(_Flush(done), timeout=timeout)
        done.wait(timeout)

    def _run(self) -> None:
        _lowest_cpu_priority()
        while (item := self._queue.get()) is not None:
            if isinstance(item, _Flush):
                item.done.set()
                continue
            try:
                self._answer(item)
            except Exception:  # noqa: BLE001 (the background never takes serving down)
                log.exception("the background answer to request %s failed", item.request_id)

    def _answer(self, item: _Mirrored) -> None:
        version = item.model.version
        try:
            probabilities = item.model.predict(item.images)
        except Exception:  # noqa: BLE001 (a model that fails is what the canary's error check counts)
            self.metrics.shadow_answers.labels(version, "error").inc()
            log.exception("%s failed to answer request %s in the background", version, item.request_id)
            return
        self.metrics.shadow_answers.labels(version, "ok").inc()
        predicted = probabilities.argmax(axis=1)
        self.metrics.shadow_compared_images.inc(len(predicted))
        self.metrics.shadow_agreed_images.inc(int((predicted == item.answered).sum()))
        if self.monitor is not None:
            self.monitor.observe_other(item.request_id, item.model, item.images, item.sources, probabilities)


def _lowest_cpu_priority() -> None:
    """Let the scheduler give this thread only the CPU the foreground leaves: on Linux a thread has a nice value of
    its own. Where it has not (or may not lower it), the bounded queue still keeps the background in check."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        log.info("the background answers run at normal priority here")


@dataclass(frozen=True)
class _Flush:
    done: threading.Event
