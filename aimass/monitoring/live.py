"""The server's own monitoring: a sliding window of the images it answered, measured against the served model's
training profile and reference outputs (drift.py), and the labels that come back joined to the predictions they
judge (live accuracy). Both are Prometheus gauges and the JSON of `GET /v2/models/NAME/monitor`.

A request's part is one non-blocking put on a bounded queue (a full queue skips the images and counts them) and a
few dictionary writes to remember its answer for feedback; statistics, distances and the MMD test run on the
monitor's own thread, every `serving.monitor.interval_seconds` and when the JSON view is asked for.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aimass.config import AimassConfig
from aimass.data.profile import image_statistics
from aimass.monitoring.drift import DriftReport, measure_drift

log = logging.getLogger("aimass.monitoring")


class UnknownRequest(LookupError):
    """Feedback for a request id this server did not answer (or answered too long ago to remember)."""


class InvalidLabels(ValueError):
    """Feedback whose labels do not fit the request they judge (unknown class, wrong count)."""


@dataclass
class _Answer:
    version: str
    class_names: list[str]
    predicted: np.ndarray  # (N,) class indices
    labelled: bool = False
    truth: np.ndarray | None = None  # the labels, once they came
    others: dict[str, np.ndarray] = field(default_factory=dict)  # a canary's background answers, by version
    pair_counted: bool = False  # counted into the canary's paired accuracy


@dataclass(frozen=True)
class _WindowChunk:
    version: str
    statistics: dict[str, np.ndarray]
    probabilities: np.ndarray

    def __len__(self) -> int:
        return len(self.probabilities)

    def tail(self, count: int) -> _WindowChunk:
        return _WindowChunk(self.version, {k: v[-count:] for k, v in self.statistics.items()},
                            self.probabilities[-count:])


class LiveMonitor:
    def __init__(self, model_name: str, config: AimassConfig, metrics, current: Callable[[], object],
                 candidate: Callable[[], object] = lambda: None):
        """`current()` is the ServedModel answering now (or None); `candidate()` a canary's candidate (or None)."""
        self.model_name = model_name
        self.settings = config.serving.monitor
        self.validation = config.validation
        self.monitor_config = config.monitor
        self.metrics = metrics
        self.current = current
        self.candidate = candidate
        self._incoming: queue.Queue = queue.Queue(maxsize=self.settings.max_queue)
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._labelled: dict[str, OrderedDict[str, tuple[int, int]]] = {}  # version -> id -> (correct, images)
        self._window: deque[_WindowChunk] = deque()
        self._lock = threading.Lock()
        self._measure_lock = threading.Lock()
        self._changed = True
        self._report: dict = self._empty_report()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aimass-monitor", daemon=True)
        metrics.drift_detected.set(0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # ---- the request's part ----

    def observe(self, request_id: str, served, images: np.ndarray, sources: np.ndarray,
                probabilities: np.ndarray) -> None:
        predicted = probabilities.argmax(axis=1)
        for index, count in zip(*np.unique(predicted, return_counts=True)):
            self.metrics.predictions.labels(served.version, served.class_names[index]).inc(int(count))
        with self._lock:
            self._answers[request_id] = _Answer(served.version, served.class_names, predicted)
            self._answers.move_to_end(request_id)
            while len(self._answers) > self.settings.remember_predictions:
                self._answers.popitem(last=False)
        try:
            self._incoming.put_nowait((served.version, images, sources, probabilities))
        except queue.Full:
            self.metrics.monitor_skipped.inc(len(images))

    def observe_other(self, request_id: str, model, images: np.ndarray, sources: np.ndarray,
                      probabilities: np.ndarray) -> None:
        """A canary's background answer to a request already answered: into that version's window (its drift view)
        and beside the answer, so that a label judges both models on the same images, whichever arrives first."""
        predicted = probabilities.argmax(axis=1)
        with self._lock:
            answer = self._answers.get(request_id)
            if answer is not None and len(predicted) == len(answer.predicted):
                answer.others[model.version] = predicted
                if answer.truth is not None:
                    self._judge(request_id, model.version, predicted, answer.truth)
                    self._count_pair(answer)
        try:
            self._incoming.put_nowait((model.version, images, sources, probabilities))
        except queue.Full:
            self.metrics.monitor_skipped.inc(len(images))

    def label(self, request_id: str, names: list[str], apply: bool = True) -> str:
        """Join labels (class names, one per image of the request) to the prediction made for `request_id`; a second
        label for the same id replaces the first. Returns the version that made the prediction. With `apply`
        false, only checks that the labels would be taken.

        Raises:
            UnknownRequest: this server does not remember answering `request_id`.
            InvalidLabels: a name is not one of the model's classes, or the count differs from the request's.
        """
        with self._lock:
            answer = self._answers.get(request_id)
            if answer is None:
                raise UnknownRequest(
                    f"no prediction with id {request_id!r} among the last {self.settings.remember_predictions} this "
                    "server made; labels for older requests, or for another replica's, go in through `aimass "
                    "feedback import`")
            unknown = [name for name in names if name not in answer.class_names]
            if unknown:
                raise InvalidLabels(f"unknown class {unknown[0]!r}; the classes are {', '.join(answer.class_names)}")
            if len(names) != len(answer.predicted):
                raise InvalidLabels(f"request {request_id!r} had {len(answer.predicted)} images; send one label per "
                                    f"image, in the request's order ({len(names)} given)")
            if not apply:
                return answer.version
            truth = np.array([answer.class_names.index(name) for name in names])
            if not answer.labelled:
                self.metrics.feedback.labels(answer.version).inc(len(names))
            answer.labelled, answer.truth = True, truth
            for version, predicted in [(answer.version, answer.predicted), *answer.others.items()]:
                self._judge(request_id, version, predicted, truth)
            self._count_pair(answer)
            return answer.version

    def _count_pair(self, answer: _Answer) -> None:
        """A canary's paired accuracy: once a labelled request was answered by both models, each version's answer
        is counted (once, with the first label), so the two are compared on the same images (under the lock)."""
        if answer.pair_counted or not answer.others or answer.truth is None:
            return
        answer.pair_counted = True
        for version, predicted in [(answer.version, answer.predicted), *answer.others.items()]:
            self.metrics.judged_images.labels(version).inc(len(answer.truth))
            self.metrics.judged_correct_images.labels(version).inc(int((answer.truth == predicted).sum()))

    def _judge(self, request_id: str, version: str, predicted: np.ndarray, truth: np.ndarray) -> None:
        """One version's answer to a labelled request, into its live accuracy window (under the lock)."""
        correct = int((truth == predicted).sum())
        by_id = self._labelled.setdefault(version, OrderedDict())
        by_id[request_id] = (correct, len(truth))
        by_id.move_to_end(request_id)
        while sum(images for _, images in by_id.values()) > self.settings.window and len(by_id) > 1:
            by_id.popitem(last=False)
        self._changed = True

    # ---- the monitor's part ----

    def report(self) -> dict:
        """The window measured now (if anything arrived since the last measurement), as JSON-ready values."""
        self.measure()
        return self._report

    def measure(self) -> None:
        with self._measure_lock:
            self._take_incoming()
            with self._lock:
                if not self._changed:
                    return
                self._changed = False
                accuracy = {version: (sum(c for c, _ in by_id.values()), sum(n for _, n in by_id.values()))
                            for version, by_id in self._labelled.items()}
                window = list(self._window)
            try:
                self._report = self._measured(window, accuracy)
            except Exception:  # noqa: BLE001 (monitoring never takes serving down)
                log.exception("measuring the monitoring window failed")

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_seconds):
            self.measure()

    def _take_incoming(self) -> None:
        """Statistics of the images that arrived, into the window (the oldest images leave it)."""
        arrived = []
        while True:
            try:
                arrived.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        if not arrived:
            return
        chunks = [_WindowChunk(version, image_statistics([images], sources), probabilities)
                  for version, images, sources, probabilities in arrived]
        with self._lock:
            self._window.extend(chunks)
            total = sum(len(chunk) for chunk in self._window)
            while total > self.settings.window:
                oldest = self._window.popleft()
                total -= len(oldest)
                if total < self.settings.window:
                    self._window.appendleft(oldest.tail(self.settings.window - total))
                    total = self.settings.window
            self._changed = True

    def _measured(self, window: list[_WindowChunk], accuracy: dict[str, tuple[int, int]]) -> dict:
        served = self.current()
        report = self._empty_report()
        for version, (correct, images) in accuracy.items():
            self.metrics.live_accuracy.labels(version).set(correct / images)
        report["feedback"] = {"by_version": {version: {"labelled_images": images, "accuracy": correct / images}
                                             for version, (correct, images) in accuracy.items()}}
        if served is None:
            return report
        candidate = self.candidate()
        if candidate is not None:
            report["canary"] = self._measured_version(window, candidate, self._empty_report(), canary=True)
        return self._measured_version(window, served, report)

    def _measured_version(self, window: list[_WindowChunk], served, report: dict, canary: bool = False) -> dict:
        """`report` with the window of `served`'s answers measured against its own training data; a canary
        candidate's view sets only its own drift gauge."""
        chunks = [chunk for chunk in window if chunk.version == served.version]
        images = sum(len(chunk) for chunk in chunks)
        own = report["feedback"]["by_version"].get(served.version, {"labelled_images": 0, "accuracy": None})
        report.update(version=served.version, revision=served.revision, measured_at=time.time())
        report["feedback"].update(own)
        report["window"]["images"] = images
        if not canary:
            self.metrics.monitor_window_images.set(images)
        if images == 0:
            return report
        probabilities = np.concatenate([chunk.probabilities for chunk in chunks])
        shares = np.bincount(probabilities.argmax(axis=1), minlength=len(served.class_names)) / images
        report["class_mix"] = dict(zip(served.class_names, np.round(shares, 4).tolist()))
        if images < self.settings.min_images:
            report["drift"]["notes"] = [f"the window holds {images} images; drift is judged from "
                                        f"{self.settings.min_images} (serving.monitor.min_images)"]
            return report
        statistics = {name: np.concatenate([chunk.statistics[name] for chunk in chunks])
                      for name in chunks[0].statistics}
        drift = measure_drift(statistics, probabilities, served.class_names, served.data_profile,
                              served.reference_outputs, f"the last {images} images served by {served.version} vs "
                              "its training data", self.validation, self.monitor_config)
        if canary:
            self.metrics.canary_drift_detected.set(1 if drift.drifted else 0)
        else:
            self._show_drift(drift)
        report["drift"] = drift.to_dict()
        return report

    def _show_drift(self, drift: DriftReport) -> None:
        for check in drift.checks:
            label = check.statistic.replace(" ", "_")
            self.metrics.drift_distance.labels(label).set(check.distance)
            self.metrics.drift_threshold.labels(label).set(check.threshold)
        self.metrics.drift_detected.set(1 if drift.drifted else 0)

    def _empty_report(self) -> dict:
        return {"model": self.model_name, "version": None, "revision": None, "measured_at": None,
                "window": {"capacity": self.settings.window, "images": 0, "min_images": self.settings.min_images},
                "drift": {"detected": False, "checks": [], "notes": []},
                "feedback": {"labelled_images": 0, "accuracy": None, "by_version": {}}, "class_mix": {}}
