"""`aimass monitor`: the capture store of every replica read back and measured per model version, with the same
measurement the server makes on its window (drift.py), as JSON and as an HTML page with charts.

Per version: its captured requests in time order, cut into consecutive windows of `serving.monitor.window` images
(the last one kept when it holds at least `serving.monitor.min_images`); each window's images decoded with the
version's own preprocessing, answered again by the version itself (the capture keeps only the top classes, drift
compares every probability), and measured against its training profile and reference outputs. Labels join the
requests they judge by id (a later label for the same id replaces an earlier one).

A breach, for the release's production version: the latest window drifted (the statistic, distance and threshold),
or live accuracy over at least `monitor.min_labelled` labelled images fell more than `monitor.max_accuracy_drop`
below the version's test accuracy. A file that cannot be read and a line that is not a whole record (a replica killed
mid-write) are skipped and counted, never fatal.
"""
from __future__ import annotations

import html
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from aimass.capture.records import InvalidRecord, Label, CapturedRequest, FEEDBACK, REQUESTS, parse_label_line, \
    parse_request_line
from aimass.capture.store import CaptureStore
from aimass.config import AimassConfig
from aimass.data.preprocess import ImageDecodeError, decode_uploads_with_sources, tensor_sources
from aimass.data.profile import image_statistics
from aimass.errors import AimassError
from aimass.monitoring.drift import DriftReport, measure_drift

log = logging.getLogger("aimass.monitoring")
PRODUCTION_ALIAS = "production"
_DURATION = re.compile(r"^(?P<count>[0-9]+)(?P<unit>[smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `30m`, `6h`, `7d`, ...

    Raises:
        AimassError: the text is not a whole number followed by s, m, h or d.
    """
    match = _DURATION.match(text.strip())
    if match is None:
        raise AimassError(f"duration {text!r} is not a whole number followed by s, m, h or d (e.g. 30m, 24h, 7d)")
    return int(match["count"]) * _UNIT_SECONDS[match["unit"]]


# ---- reading the store ----

@dataclass(frozen=True)
class CaptureRead:
    requests: list[CapturedRequest]
    labels: dict[str, Label]  # request id -> its latest label
    files: int
    skipped_files: list[str]  # "key: why"
    skipped_lines: int


def read_capture(store: CaptureStore, since: float | None) -> CaptureRead:
    requests, labels, skipped_files, skipped_lines, files = [], {}, [], 0, 0
    for kind, parse in ((REQUESTS, parse_request_line), (FEEDBACK, parse_label_line)):
        for file in store.files(kind, since):
            files += 1
            try:
                lines = list(store.lines(file))
            except Exception as error:  # noqa: BLE001 (one unreadable file must not hide the others)
                skipped_files.append(f"{file.key}: {error}")
                continue
            for line in lines:
                try:
                    record = parse(line)
                except InvalidRecord:
                    skipped_lines += 1
                    continue
                if kind == REQUESTS:
                    requests.append(record)
                elif record.request_id not in labels or labels[record.request_id].time <= record.time:
                    labels[record.request_id] = record
    requests.sort(key=lambda record: record.time)
    return CaptureRead(requests, labels, files, skipped_files, skipped_lines)


# ---- measuring ----

@dataclass(frozen=True)
class Breach:
    version: str
    kind: str  # "drift" or "accuracy"
    statistic: str
    value: float
    threshold: float
    window: str

    def sentence(self) -> str:
        if self.kind == "accuracy":
            return (f"{self.version}: live accuracy {self.value:.4f} is below {self.threshold:.4f} (test accuracy "
                    f"minus monitor.max_accuracy_drop) over {self.window}")
        return (f"{self.version}: drift in {self.statistic}, distance {self.value:.4f} past its threshold "
                f"{self.threshold:.4f}, over {self.window}")


@dataclass
class WindowMeasurement:
    start: float
    end: float
    images: int
    drift: DriftReport
    labelled_images: int
    accuracy: float | None


@dataclass
class VersionReport:
    version: str
    requests: int
    images: int
    labelled_images: int
    accuracy: float | None
    expected_accuracy: float | None  # the version's test accuracy, as the registry records it
    class_mix: dict[str, float]
    windows: list[WindowMeasurement] = field(default_factory=list)
    breaches: list[Breach] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class MonitorReport:
    model: str
    store: str
    since: float | None
    generated_at: float
    production_version: str | None
    files: int
    skipped_files: list[str]
    skipped_lines: int
    versions: list[VersionReport]

    @property
    def breaches(self) -> list[Breach]:
        """Breaches of the production version (of every version when none carries the alias)."""
        return [breach for report in self.versions for breach in report.breaches
                if self.production_version in (None, report.version)]

    def to_dict(self) -> dict:
        values = asdict(self)
        for version, report in zip(values["versions"], self.versions):
            for window, measured in zip(version["windows"], report.windows):
                window["drift"] = measured.drift.to_dict()
        values["breaches"] = [asdict(breach) | {"sentence": breach.sentence()} for breach in self.breaches]
        return values

    def verdict(self) -> str:
        if self.breaches:
            return f"BREACH: {'; '.join(breach.sentence() for breach in self.breaches)}"
        measured = sum(report.images for report in self.versions)
        return (f"no breach: {measured} captured images of {len(self.versions)} versions measured"
                + (f" ({self.skipped_lines} unreadable records and {len(self.skipped_files)} files skipped)"
                   if self.skipped_lines or self.skipped_files else ""))


def build_monitor_report(config: AimassConfig, read: CaptureRead, registry, store_description: str,
                         since: float | None) -> MonitorReport:
    """Measure the captured traffic `read` (`read_capture`) of every version of `registry`'s model."""
    aliases = registry.aliases()
    versions = sorted({record.version for record in read.requests}, key=lambda v: (len(v), v))
    reports = [_measure_version(config, registry, version,
                                [r for r in read.requests if r.version == version], read.labels)
               for version in versions]
    return MonitorReport(registry.model_name, store_description, since, time.time(), aliases.get(PRODUCTION_ALIAS),
                         read.files, read.skipped_files, read.skipped_lines, reports)


def _measure_version(config: AimassConfig, registry, version: str, records: list[CapturedRequest],
                     labels: dict[str, Label]) -> VersionReport:
    from aimass.serving.cache import RegistryCache
    from aimass.serving.model import load_served_model

    settings = config.serving.monitor
    try:
        record = registry.get(version)
        cache = RegistryCache(registry, Path(config.data.repo_dir) / config.serving.cache_dir)
        served = load_served_model(registry.model_name, version, None, cache.fetch(version), compile_quantized=False)
    except Exception as error:  # noqa: BLE001 (a version deleted from the registry still has its traffic counted)
        report = VersionReport(version, len(records), sum(r.count for r in records), 0, None, None, {})
        report.notes.append(f"not measured: the registry cannot provide {version} ({error})")
        return report
    images, sources, answered, times, truth, undecodable = _decoded(records, served, labels, config)
    probabilities = np.concatenate([served.predict(images[start:start + 256]) for start in range(0, len(images), 256)]) \
        if len(images) else np.zeros((0, len(served.class_names)), np.float32)
    names = served.class_names
    labelled = truth >= 0
    accuracy = float((answered[labelled] == truth[labelled]).mean()) if labelled.any() else None
    shares = np.bincount(answered, minlength=len(names)) / max(len(answered), 1)
    report = VersionReport(version, len(records), len(images), int(labelled.sum()), accuracy,
                           record.metrics.get("accuracy"), dict(zip(names, np.round(shares, 4).tolist())))
    if undecodable:
        report.notes.append(f"{undecodable} captured images could not be decoded with {version}'s preprocessing")
    for start in range(0, len(images), settings.window):
        end = min(start + settings.window, len(images))
        if end - start < settings.min_images:
            report.notes.append(f"the last {end - start} images are fewer than serving.monitor.min_images "
                                f"({settings.min_images}): not measured as a window")
            break
        statistics = image_statistics([images[start:end]], sources[start:end])
        drift = measure_drift(statistics, probabilities[start:end], names, served.data_profile,
                              served.reference_outputs, f"images {start + 1}..{end} served by {version} vs its "
                              "training data", config.validation, config.monitor)
        window_labelled = labelled[start:end]
        window_accuracy = float((answered[start:end][window_labelled] == truth[start:end][window_labelled]).mean()) \
            if window_labelled.any() else None
        report.windows.append(WindowMeasurement(float(times[start]), float(times[end - 1]), end - start, drift,
                                                int(window_labelled.sum()), window_accuracy))
    report.breaches = _breaches(report, config)
    return report


def _decoded(records: list[CapturedRequest], served, labels: dict[str, Label], config: AimassConfig):
    """Every captured image of `records` as the version's input, with its source size, the class it was answered
    with, the capture time, and its label's class (-1 when unlabelled)."""
    spec, names = served.input_spec, served.class_names
    images, sources, answered, times, truth, undecodable = [], [], [], [], [], 0
    for record in records:
        try:
            if record.encoded is not None:
                pixels, origins = decode_uploads_with_sources(record.encoded, spec, config.serving.max_image_pixels)
            elif record.pixels.shape[1:] == spec.shape:
                pixels, origins = record.pixels, tensor_sources(record.pixels)
            else:
                raise ImageDecodeError(f"a tensor of shape {record.pixels.shape[1:]}, not {spec.shape}")
        except ImageDecodeError:
            undecodable += record.count
            continue
        label = labels.get(record.request_id)
        given = label.labels if label is not None and len(label.labels) == record.count else (None,) * record.count
        images.append(pixels)
        sources.append(origins)
        answered += [names.index(name) if name in names else -1 for name in record.labels]
        truth += [names.index(name) if name in names else -1 for name in given]
        times += [record.time] * record.count
    empty = np.zeros((0, *spec.shape), np.uint8)
    return (np.concatenate(images) if images else empty, np.concatenate(sources) if sources else np.zeros((0, 3)),
            np.asarray(answered, dtype=np.int64), np.asarray(times), np.asarray(truth, dtype=np.int64), undecodable)


def _breaches(report: VersionReport, config: AimassConfig) -> list[Breach]:
    breaches = []
    if report.windows:
        latest = report.windows[-1]
        where = f"{latest.images} images captured {_when(latest.start)} to {_when(latest.end)}"
        breaches += [Breach(report.version, "drift", check.statistic, check.distance, check.threshold, where)
                     for check in latest.drift.drifted]
    settings = config.monitor
    if (report.accuracy is not None and report.expected_accuracy is not None
            and report.labelled_images >= settings.min_labelled
            and report.accuracy < report.expected_accuracy - settings.max_accuracy_drop):
        breaches.append(Breach(report.version, "accuracy", "live accuracy", report.accuracy,
                               report.expected_accuracy - settings.max_accuracy_drop,
                               f"{report.labelled_images} labelled images"))
    return breaches


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- the page ----

def report_html(report: MonitorReport) -> str:
    """The report as one self-contained page: every value escaped, charts embedded as PNG."""
    from matplotlib.figure import Figure

    from aimass.reports import figure_png_base64

    e = lambda value: html.escape(str(value))  # noqa: E731
    parts = [f"<h1>Monitoring of {e(report.model)}</h1>",
             f"<p><b>{e(report.verdict())}</b></p>",
             f"<p>Capture store {e(report.store)}; {report.files} files read, {report.skipped_lines} unreadable "
             f"records and {len(report.skipped_files)} unreadable files skipped; production version "
             f"{e(report.production_version or 'none')}; generated {e(_when(report.generated_at))}.</p>"]
    for version in report.versions:
        accuracy = "no labels" if version.accuracy is None else f"{version.accuracy:.4f}"
        expected = "" if version.expected_accuracy is None else f" (test accuracy {version.expected_accuracy:.4f})"
        parts.append(f"<h2>{e(version.version)}</h2><p>{version.requests} requests, {version.images} images, "
                     f"{version.labelled_images} labelled; live accuracy {e(accuracy)}{e(expected)}.</p>")
        parts += [f"<p>{e(note)}</p>" for note in version.notes]
        if version.windows:
            figure = Figure(figsize=(11, 3.2))
            drift_axes, accuracy_axes, mix_axes = figure.subplots(1, 3)
            ends = [datetime.fromtimestamp(w.end, timezone.utc) for w in version.windows]
            for statistic in [c.statistic for c in version.windows[0].drift.checks]:
                ratios = [next((c.distance / max(c.threshold, 1e-12) for c in w.drift.checks
                                if c.statistic == statistic), np.nan) for w in version.windows]
                drift_axes.plot(ends, ratios, marker="o", label=statistic)
            drift_axes.axhline(1, color="red", linestyle="--", linewidth=1)
            drift_axes.set_title("drift: distance / threshold (over 1 = drift)", fontsize=9)
            drift_axes.legend(fontsize=6)
            accuracy_axes.plot(ends, [np.nan if w.accuracy is None else w.accuracy for w in version.windows],
                               marker="o")
            if version.expected_accuracy is not None:
                accuracy_axes.axhline(version.expected_accuracy, color="grey", linestyle="--", linewidth=1)
            accuracy_axes.set_title("live accuracy per window (dashed: test accuracy)", fontsize=9)
            mix_axes.bar(range(len(version.class_mix)), list(version.class_mix.values()))
            mix_axes.set_xticks(range(len(version.class_mix)), list(version.class_mix), rotation=60, fontsize=6)
            mix_axes.set_title("class mix (answered)", fontsize=9)
            figure.autofmt_xdate()
            parts.append(f"<img alt='charts of {e(version.version)}' "
                         f"src='data:image/png;base64,{figure_png_base64(figure)}'/>")
            latest = version.windows[-1].drift
            rows = "".join(f"<tr><td>{e(c['statistic'])}</td><td>{e(c['kind'])}</td><td>{c['distance']:.4f}</td>"
                           f"<td>{c['threshold']:.4f}</td><td>{'DRIFT' if c['drifted'] else 'ok'}</td></tr>"
                           for c in latest.to_dict()["checks"])
            parts.append("<h3>Latest window</h3><table><tr><th>statistic</th><th>measure</th><th>value</th>"
                         f"<th>threshold</th><th>verdict</th></tr>{rows}</table>")
            parts += [f"<p>{e(note)}</p>" for note in latest.notes]
    if report.skipped_files:
        parts.append("<h2>Unreadable files</h2><ul>" + "".join(f"<li>{e(item)}</li>" for item in
                                                             report.skipped_files[:50]) + "</ul>")
    title = f"aimass monitor: {e(report.model)}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>body{{font-family:"
            "sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
            f"</style></head><body>{''.join(parts)}</body></html>")
