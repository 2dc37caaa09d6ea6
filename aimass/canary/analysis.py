"""A canary step's verdict: candidate and production compared on the same window of traffic, from the servers'
own counters (one server's /metrics, or every replica's through Prometheus).

The checks, and how they combine (docs/OPERATIONS.md):
    errors     the candidate's 5xx share (its routed and background answers) may exceed production's by
               release.canary.max_error_rate_increase.
    latency    candidate p99 / production p99 of routed requests, at most max_latency_ratio; judged when both
               answered min_requests routed requests in the window (not in the shadow step, nor at 100%).
    accuracy   live accuracy from feedback on the canary so far, on the labelled requests both models answered
               (one in the foreground, the other in the background: the same images); the candidate may trail
               production by max_accuracy_drop. Judged once min_labelled such images were labelled (without
               mirroring, only the shadow step has pairs).
    agreement  share of images both models give the same class (background answers); at least min_agreement.
               It is the quality check of traffic without labels: once accuracy is judged, accuracy decides and
               agreement is shown only, so a candidate that disagrees because it is right more often passes.
    drift      the candidate's window drifts from its own training data while production's does not (it was
               trained on data unlike live traffic). Judged when the candidate's window holds min_images.
A step passes when every judged check passes; a check that cannot be judged yet is shown as such, never failed.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aimass.canary.plan import CanaryError, CanaryState, StepResult
from aimass.config import AimassConfig, CanaryConfig

# The series the analysis reads; everything else on /metrics is ignored.
SERIES = ("aimass_model_requests_total", "aimass_model_request_duration_seconds_bucket",
          "aimass_judged_images_total", "aimass_judged_correct_images_total", "aimass_shadow_answers_total",
          "aimass_shadow_compared_images_total", "aimass_shadow_agreed_images_total", "aimass_canary_weight",
          "aimass_canary_info", "aimass_canary_drift_detected", "aimass_drift_detected", "aimass_canary_ended_total")

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Snapshot:
    """Every series of SERIES at one moment: (name, labels) -> value; one series per server (Prometheus keeps
    the pod's labels), so that a counter reset on one replica is seen as one."""

    samples: dict[tuple[str, Labels], float]

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        found = []
        for (sample_name, labels), value in self.samples.items():
            as_dict = dict(labels)
            if sample_name == name and all(as_dict.get(key) == wanted for key, wanted in match.items()):
                found.append((as_dict, value))
        return found


def increase(start: Snapshot, end: Snapshot, name: str, **match: str) -> float:
    """How much the counters `name{match}` grew between two snapshots, summed over series; a series that went
    down was reset (its server restarted) and counts from zero."""
    total = 0.0
    for labels, value in end.series(name, **match):
        before = start.samples.get((name, frozenset(labels.items())), 0.0)
        total += value - before if value >= before else value
    return total


def parse_metrics_text(text: str) -> Snapshot:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SERIES:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Snapshot(samples)


def read_server_metrics(base_url: str) -> Snapshot:
    """One server's /metrics (the embedded backend: the process that `aimass serve` runs)."""
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/metrics", timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise CanaryError(f"cannot read the server's counters at {base_url}/metrics ({error}): is `aimass serve` "
                          "running there? (serving.url or serving.host/port; release.canary.metrics_url for a "
                          "Prometheus)") from None
    return parse_metrics_text(response.text)


def read_prometheus(base_url: str) -> Snapshot:
    """Every replica's series as Prometheus last scraped them (the Helm backend)."""
    query = '{__name__=~"' + "|".join(SERIES) + '"}'
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=30)
        response.raise_for_status()
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError) as error:
        raise CanaryError(f"cannot query Prometheus at {base_url} ({error}); set release.canary.metrics_url to "
                          "a Prometheus that scrapes the serving pods") from None
    samples = {}
    for item in result:
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        samples[(name, frozenset(labels.items()))] = float(item["value"][1])
    return Snapshot(samples)


def open_metrics_reader(config: AimassConfig) -> Callable[[], Snapshot]:
    """Where the controller reads the servers' counters: release.canary.metrics_url (a Prometheus), else the one
    server of the embedded backend (serving.url, or serving.host:port)."""
    url = config.release.canary.metrics_url
    if url:
        return lambda: read_prometheus(url)
    if config.release.backend == "helm":
        raise CanaryError("a canary on the Helm backend reads every replica's counters from Prometheus: set "
                          "release.canary.metrics_url (e.g. http://prometheus.monitoring.svc:9090)")
    server = config.serving.url or f"http://{config.serving.host}:{config.serving.port}"
    return lambda: read_server_metrics(server)


def routing_reported(snapshot: Snapshot, state: CanaryState) -> bool:
    """Whether every server routes as `state`'s current step asks (its candidate, step and weight)."""
    weights = [value for _, value in snapshot.series("aimass_canary_weight")]
    infos = [labels for labels, value in snapshot.series("aimass_canary_info") if value == 1]
    return bool(weights) and len(infos) == len(weights) and all(value == state.weight for value in weights) and \
        all((labels.get("candidate"), labels.get("step")) == (state.candidate_version, str(state.step))
            for labels in infos)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    judged: bool
    value: float | None
    threshold: float | None
    summary: str  # the value against its threshold, in words; the reason when not judged

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        verdict = "ok" if self.passed and self.judged else ("FAILED" if not self.passed else "not judged")
        return f"{self.name} {self.summary} [{verdict}]"


@dataclass(frozen=True)
class Window:
    """What happened in one step's window, per version, and over the canary so far (accuracy)."""

    routed: dict[str, float]
    failed: dict[str, float]  # 5xx of routed requests, and background answers that raised
    background: dict[str, float]
    compared_images: float
    agreed_images: float
    p99: dict[str, float | None]
    judged_images: dict[str, float]  # since the canary (or this controller) started
    correct_images: dict[str, float]
    candidate_drifted: bool | None
    production_drifted: bool | None

    def answered(self, version: str) -> float:
        return self.routed[version] + self.background[version]


def measure_window(start: Snapshot, end: Snapshot, since: Snapshot, versions: tuple[str, str]) -> Window:
    routed, failed, background, p99, judged, correct = {}, {}, {}, {}, {}, {}
    for version in versions:
        routed[version] = increase(start, end, "aimass_model_requests_total", version=version)
        server_errors = sum(increase(start, end, "aimass_model_requests_total", version=version, code=code)
                            for code in {labels["code"] for labels, _ in end.series("aimass_model_requests_total")}
                            if code.startswith("5"))
        shadow_errors = increase(start, end, "aimass_shadow_answers_total", version=version, outcome="error")
        failed[version] = server_errors + shadow_errors
        background[version] = increase(start, end, "aimass_shadow_answers_total", version=version)
        p99[version] = _quantile(0.99, start, end, version)
        judged[version] = increase(since, end, "aimass_judged_images_total", version=version)
        correct[version] = increase(since, end, "aimass_judged_correct_images_total", version=version)
    return Window(routed, failed, background, increase(start, end, "aimass_shadow_compared_images_total"),
                  increase(start, end, "aimass_shadow_agreed_images_total"), p99, judged, correct,
                  _flag(end, "aimass_canary_drift_detected"), _flag(end, "aimass_drift_detected"))


def judge(window: Window, candidate: str, production: str, settings: CanaryConfig) -> list[Check]:
    checks = [_errors(window, candidate, production, settings), _latency(window, candidate, production, settings)]
    accuracy = _accuracy(window, candidate, production, settings)
    checks += [accuracy, _agreement(window, settings, decided_by_accuracy=accuracy.judged),
               _drift(window)]
    return checks


def step_result(state: CanaryState, window: Window, production: str, settings: CanaryConfig) -> StepResult:
    checks = judge(window, state.candidate_version, production, settings)
    return StepResult(state.weight, all(check.passed for check in checks), [check.to_dict() for check in checks],
                      {state.candidate_version: int(window.answered(state.candidate_version)),
                       production: int(window.answered(production))})


def too_little_traffic(state: CanaryState, answered: float, seconds: float, settings: CanaryConfig) -> StepResult:
    check = Check("traffic", False, True, answered, settings.min_requests,
                  f"{answered:.0f} requests answered by {state.candidate_version} in {seconds:.0f} s, fewer than "
                  f"{settings.min_requests} (release.canary.min_requests) by release.canary.traffic_timeout_seconds")
    return StepResult(state.weight, False, [check.to_dict()], {state.candidate_version: int(answered)})


def failed_check(result: StepResult) -> str:
    """The reason an aborted step gives: its first failed check, value and threshold."""
    failed = next(check for check in result.checks if not check["passed"])
    return f"{failed['name']} {failed['summary']}"


# ---- the checks ----

def _errors(window: Window, candidate: str, production: str, settings: CanaryConfig) -> Check:
    answered = window.answered(candidate)
    if answered == 0:
        return Check("errors", True, False, None, settings.max_error_rate_increase,
                     f"{candidate} answered nothing yet")
    rate = window.failed[candidate] / answered
    baseline = window.failed[production] / window.answered(production) if window.answered(production) else 0.0
    increase_ = rate - baseline
    passed = increase_ <= settings.max_error_rate_increase
    return Check("errors", passed, True, increase_, settings.max_error_rate_increase,
                 f"{rate:.3f} vs production {baseline:.3f} ({increase_:+.3f} {'<=' if passed else '>'} "
                 f"+{settings.max_error_rate_increase:.3f}, release.canary.max_error_rate_increase)")


def _latency(window: Window, candidate: str, production: str, settings: CanaryConfig) -> Check:
    counts = {version: window.routed[version] for version in (candidate, production)}
    if min(counts.values()) < settings.min_requests or not window.p99[production] or window.p99[candidate] is None:
        return Check("latency", True, False, None, settings.max_latency_ratio,
                     f"needs {settings.min_requests} routed requests of each version "
                     f"({candidate} {counts[candidate]:.0f}, {production} {counts[production]:.0f})")
    ratio = window.p99[candidate] / window.p99[production]
    passed = ratio <= settings.max_latency_ratio
    return Check("latency", passed, True, ratio, settings.max_latency_ratio,
                 f"p99 {window.p99[candidate] * 1000:.1f} ms vs {window.p99[production] * 1000:.1f} ms "
                 f"({ratio:.2f}x {'<=' if passed else '>'} {settings.max_latency_ratio:.2f}x, "
                 "release.canary.max_latency_ratio)")


def _accuracy(window: Window, candidate: str, production: str, settings: CanaryConfig) -> Check:
    labelled = {version: window.judged_images[version] for version in (candidate, production)}
    if min(labelled.values()) < settings.min_labelled:
        return Check("accuracy", True, False, None, -settings.max_accuracy_drop,
                     f"needs {settings.min_labelled} labelled images both versions answered (release.canary.min_labelled; "
                     f"{candidate} {labelled[candidate]:.0f}, {production} {labelled[production]:.0f})")
    accuracy = {version: window.correct_images[version] / labelled[version] for version in labelled}
    difference = accuracy[candidate] - accuracy[production]
    passed = difference >= -settings.max_accuracy_drop
    return Check("accuracy", passed, True, difference, -settings.max_accuracy_drop,
                 f"{accuracy[candidate]:.3f} vs production {accuracy[production]:.3f} on "
                 f"{labelled[candidate]:.0f}/{labelled[production]:.0f} labelled images ({difference:+.3f} "
                 f"{'>=' if passed else '<'} -{settings.max_accuracy_drop:.3f}, release.canary.max_accuracy_drop)")


def _agreement(window: Window, settings: CanaryConfig, decided_by_accuracy: bool) -> Check:
    if window.compared_images == 0:
        return Check("agreement", True, False, None, settings.min_agreement,
                     "no image was answered by both models (release.canary.mirror is off)")
    share = window.agreed_images / window.compared_images
    meets = share >= settings.min_agreement
    summary = (f"{share:.3f} of {window.compared_images:.0f} images "
               f"({'>=' if meets else '<'} {settings.min_agreement:.2f}, release.canary.min_agreement)")
    if decided_by_accuracy:
        return Check("agreement", True, False, share, settings.min_agreement,
                     f"{summary}; shown only: live accuracy decides")
    return Check("agreement", meets, True, share, settings.min_agreement, summary)


def _drift(window: Window) -> Check:
    if window.candidate_drifted is None:
        return Check("drift", True, False, None, None, "no drift view of the candidate yet")
    worse = window.candidate_drifted and not window.production_drifted
    description = ("the candidate's window drifts from its training data and production's does not" if worse else
                   "the candidate's window drifts, as production's does" if window.candidate_drifted else
                   "the candidate's window is within its training data's thresholds")
    return Check("drift", not worse, True, float(window.candidate_drifted), 0.0, description)


def _flag(snapshot: Snapshot, name: str) -> bool | None:
    values = [value for _, value in snapshot.series(name)]
    return None if not values else max(values) >= 1


def _quantile(quantile: float, start: Snapshot, end: Snapshot, version: str) -> float | None:
    """The quantile of the requests in the window from histogram buckets, interpolated within a bucket as
    PromQL's histogram_quantile does."""
    counts: dict[float, float] = defaultdict(float)
    for labels, _ in end.series("aimass_model_request_duration_seconds_bucket", version=version):
        counts[float(labels["le"])] = 0.0
    for bound in counts:
        counts[bound] = increase(start, end, "aimass_model_request_duration_seconds_bucket", version=version,
                                 le=_le_label(end, version, bound))
    bounds = sorted(counts)
    if not bounds or counts[bounds[-1]] == 0:
        return None
    rank = quantile * counts[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(counts[bound] - below, 1e-12)
        lower, below = bound, counts[bound]
    return lower


def _le_label(snapshot: Snapshot, version: str, bound: float) -> str:
    for labels, _ in snapshot.series("aimass_model_request_duration_seconds_bucket", version=version):
        if float(labels["le"]) == bound:
            return labels["le"]
    raise KeyError(bound)
