"""The server's capture writer: requests hand it what they answered and go on; a background thread turns that into
records and writes them in batches, one file per interval (or per `max_records_per_file`).

A request never waits for capture and never fails because of it: handing over is a non-blocking put on a bounded
queue; a full queue drops the record, and a store that refuses a write (full disk, store down, no credentials)
drops that batch; both are counted in `aimass_capture_dropped_total{reason}` and logged once per cause.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np

from aimass.capture.records import (FEEDBACK, REQUESTS, TOP_CLASSES, CapturedRequest, Label, label_line,
                                    request_line)
from aimass.capture.store import CaptureStore, replica_name
from aimass.config import CaptureConfig

log = logging.getLogger("aimass.capture")
DROP_REASONS = ("queue_full", "store_error")


def is_sampled(request_id: str, sample_rate: float) -> bool:
    """Whether a request is captured: decided by its id, so a retry with the same id is decided the same way."""
    if sample_rate >= 1:
        return True
    return zlib.crc32(request_id.encode()) < sample_rate * 2**32


@dataclass(frozen=True)
class AnsweredRequest:
    """What a request hands over: references to what it already holds; nothing is copied or encoded on its path."""

    request_id: str
    time: float
    model: str
    version: str
    revision: int | None
    latency_ms: float
    probabilities: np.ndarray  # (N, classes)
    class_names: list[str]
    encoded: tuple[bytes, ...] | None
    pixels: np.ndarray | None

    def record(self) -> CapturedRequest:
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :TOP_CLASSES]
        top = tuple(tuple((self.class_names[k], float(row[k])) for k in best)
                    for row, best in zip(self.probabilities, order))
        return CapturedRequest(self.request_id, self.time, self.model, self.version, self.revision, self.latency_ms,
                               tuple(image[0][0] for image in top), top, self.encoded, self.pixels)


class CaptureWriter:
    def __init__(self, store: CaptureStore, settings: CaptureConfig, written, dropped):
        """`written` and `dropped` are the Prometheus counters (dropped labelled by reason)."""
        self.store = store
        self.settings = settings
        self.written = written
        self.dropped = dropped
        self.replica = replica_name()
        self._queue: queue.Queue = queue.Queue(maxsize=settings.max_queue)
        self._sequence = 0
        self._stop = threading.Event()
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="aimass-capture-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, item: AnsweredRequest | Label) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped.labels(reason="queue_full").inc()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._write(self._collect())
        pending = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        self._write(pending)

    def _collect(self) -> list:
        """Items until the interval ends or a file is full."""
        items, deadline = [], time.monotonic() + self.settings.flush_seconds
        while len(items) < self.settings.max_records_per_file and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(self._queue.get(timeout=min(remaining, 0.25)))
            except queue.Empty:
                continue
        return items

    def _write(self, items: list) -> None:
        requests = [item for item in items if isinstance(item, AnsweredRequest)]
        labels = [item for item in items if isinstance(item, Label)]
        for kind, batch, to_line in ((REQUESTS, requests, lambda item: request_line(item.record())),
                                     (FEEDBACK, labels, label_line)):
            if not batch:
                continue
            try:
                data = b"".join(to_line(item) for item in batch)
                self._sequence += 1
                self.store.write(kind, self.replica, self._sequence, data)
            except Exception as error:  # noqa: BLE001 (whatever the store does, serving goes on)
                self.dropped.labels(reason="store_error").inc(len(batch))
                message = f"capture to {self.store.description} failed, {len(batch)} {kind} records dropped: {error}"
                if message.split(",")[0] + str(type(error)) != self._last_error:
                    log.error(message)
                self._last_error = message.split(",")[0] + str(type(error))
                continue
            self._last_error = None
            self.written.inc(len(batch))
