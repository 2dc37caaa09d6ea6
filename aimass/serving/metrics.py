"""The server's Prometheus metrics."""
from __future__ import annotations

import prometheus_client


class ServerMetrics:
    """Prometheus metrics in a registry of their own (several servers may share a process, as in tests)."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "aimass_requests", "HTTP requests by route and status code", ["route", "code"], registry=self.registry)
        self.latency = prometheus_client.Histogram(
            "aimass_request_duration_seconds", "Time to answer a request", ["route"], registry=self.registry,
            buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.batch_size = prometheus_client.Histogram(
            "aimass_inference_batch_images", "Images per forward pass", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
        self.model_info = prometheus_client.Gauge(
            "aimass_model_info", "1 for the model version being served", ["model", "version", "revision"],
            registry=self.registry)
        self.model_loads = prometheus_client.Counter(
            "aimass_model_loads", "Attempts to load a new model version", ["outcome"], registry=self.registry)

    def show_model(self, served, previous) -> None:
        if previous is not None:
            self.model_info.remove(previous.name, previous.version, str(previous.revision))
        self.model_info.labels(served.name, served.version, str(served.revision)).set(1)

