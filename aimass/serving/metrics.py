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

        # Capture and monitoring (aimass/capture, aimass/monitoring). Counters that count failures are exported
        # at 0 from the start, so a dashboard or alert sees the series before the first event.
        self.capture_written = prometheus_client.Counter(
            "aimass_capture_written", "Capture records written to the store (requests and labels)",
            registry=self.registry)
        self.capture_dropped = prometheus_client.Counter(
            "aimass_capture_dropped", "Capture records dropped, by reason", ["reason"], registry=self.registry)
        for reason in ("queue_full", "store_error"):
            self.capture_dropped.labels(reason)
        self.predictions = prometheus_client.Counter(
            "aimass_predictions", "Images answered, by model version and predicted class", ["version", "class"],
            registry=self.registry)
        self.feedback = prometheus_client.Counter(
            "aimass_feedback", "Images labelled through feedback (a relabelled request counts once)", ["version"],
            registry=self.registry)
        self.live_accuracy = prometheus_client.Gauge(
            "aimass_live_accuracy", "Accuracy on the latest labelled images (serving.monitor.window), by version",
            ["version"], registry=self.registry)
        self.drift_distance = prometheus_client.Gauge(
            "aimass_drift_distance", "Distance of the monitoring window from the served model's training data",
            ["statistic"], registry=self.registry)
        self.drift_threshold = prometheus_client.Gauge(
            "aimass_drift_threshold", "Drift threshold of each statistic (sampling allowance included)",
            ["statistic"], registry=self.registry)
        self.drift_detected = prometheus_client.Gauge(
            "aimass_drift_detected", "1 while any statistic of the monitoring window is past its threshold",
            registry=self.registry)
        self.monitor_window_images = prometheus_client.Gauge(
            "aimass_monitor_window_images", "Images of the served version in the monitoring window",
            registry=self.registry)
        self.monitor_skipped = prometheus_client.Counter(
            "aimass_monitor_skipped_images", "Answered images the monitor skipped because its queue was full",
            registry=self.registry)

        # Per model version (aimass/canary): what the canary analysis compares between production and candidate.
        self.model_requests = prometheus_client.Counter(
            "aimass_model_requests", "Inference requests, by the model version that answered and status code",
            ["version", "code"], registry=self.registry)
        self.model_latency = prometheus_client.Histogram(
            "aimass_model_request_duration_seconds", "Time to answer an inference request, by model version",
            ["version"], registry=self.registry,
            buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.judged_images = prometheus_client.Counter(
            "aimass_judged_images", "Labelled images both models of a canary answered, by version: the canary's "
                                    "accuracy compares the two on the same images", ["version"],
            registry=self.registry)
        self.judged_correct_images = prometheus_client.Counter(
            "aimass_judged_correct_images", "Of those, the images the version answered correctly", ["version"],
            registry=self.registry)
        self.shadow_answers = prometheus_client.Counter(
            "aimass_shadow_answers", "Requests answered again in the background by the canary's other model, by "
                                     "that model's version and outcome", ["version", "outcome"],
            registry=self.registry)
        self.shadow_compared_images = prometheus_client.Counter(
            "aimass_shadow_compared_images", "Images both models of a canary answered", registry=self.registry)
        self.shadow_agreed_images = prometheus_client.Counter(
            "aimass_shadow_agreed_images", "Images both models of a canary gave the same class", registry=self.registry)
        self.shadow_dropped = prometheus_client.Counter(
            "aimass_shadow_dropped", "Requests not answered in the background: its queue was full",
            registry=self.registry)
        self.canary_weight = prometheus_client.Gauge(
            "aimass_canary_weight", "Percent of requests the canary's candidate answers (0: none, or shadow only)",
            registry=self.registry)
        self.canary_info = prometheus_client.Gauge(
            "aimass_canary_info", "1 for the candidate of the canary in progress", ["candidate", "step", "shadow"],
            registry=self.registry)
        self.canary_drift_detected = prometheus_client.Gauge(
            "aimass_canary_drift_detected", "1 while the candidate's window is past a drift threshold of its own "
                                            "training data", registry=self.registry)
        self.canary_ended = prometheus_client.Counter(
            "aimass_canary_ended", "Canaries this server stopped routing to: promoted (the candidate became "
                                   "production) or aborted (production stayed)", ["outcome"], registry=self.registry)
        for outcome in ("promoted", "aborted"):
            self.canary_ended.labels(outcome)
        self.reference_accuracy = prometheus_client.Gauge(
            "aimass_model_reference_accuracy", "The served version's validation accuracy as its model card records "
                                               "it (a compressed model's: its teacher's), what live accuracy is "
                                               "compared with", ["version"], registry=self.registry)
        self.canary_weight.set(0)
        self.canary_drift_detected.set(0)

    def show_canary(self, canary) -> None:
        """`canary`: the ActiveCanary of aimass/canary/traffic.py, or None."""
        self.canary_info.clear()
        self.canary_weight.set(canary.weight if canary else 0)
        if canary is None:
            self.canary_drift_detected.set(0)
            return
        self.canary_info.labels(canary.model.version, str(canary.step), str(canary.shadow).lower()).set(1)
        self._export_version(canary.model.version)

    def _export_version(self, version: str) -> None:
        """A version's counters at 0 from the moment it serves, so that dashboards and alerts see the series
        before the first event."""
        for counter in (self.judged_images, self.judged_correct_images):
            counter.labels(version)

    def show_model(self, served, previous) -> None:
        if previous is not None:
            self.model_info.remove(previous.name, previous.version, str(previous.revision))
            if previous.version != served.version:
                self.reference_accuracy.remove(previous.version)
        self.model_info.labels(served.name, served.version, str(served.revision)).set(1)
        self._export_version(served.version)
        accuracy = served.about.get("validation_accuracy")
        if isinstance(accuracy, (int, float)):
            self.reference_accuracy.labels(served.version).set(accuracy)

