"""The Grafana dashboard of a serving release, built from code with Grafana's own builder (grafana-foundation-sdk),
so that it is reviewed and diffed as code and tests can evaluate every panel's query against a real Prometheus.

    python -m aimass.monitoring.dashboard > helm/aimass-serving/dashboards/aimass-serving.json   (make dashboard)

The chart ships the JSON as a ConfigMap labelled grafana_dashboard: "1" (dashboard.enabled), which the Grafana
sidecar of kube-prometheus-stack loads. Panels select the release with the template variable `job` (=~), and rates
use Grafana's $__rate_interval.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

UID = "aimass-serving"
JOB = 'job=~"$job"'
RATE = "$__rate_interval"
INFERENCE = f'{JOB},route=~"infer|predict_v1"'


@dataclass(frozen=True)
class PanelSpec:
    row: str
    title: str
    description: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)


PANELS = (
    PanelSpec("Traffic", "Requests per second", "Every route, by status code", "reqps",
              ((f"sum by (route, code) (rate(aimass_requests_total{{{JOB}}}[{RATE}]))", "{{route}} {{code}}"),)),
    PanelSpec("Traffic", "Error share (5xx of inference)", "Alert AimassHighErrorRate above its threshold",
              "percentunit",
              ((f'(sum(rate(aimass_requests_total{{{INFERENCE},code=~"5.."}}[{RATE}])) or vector(0)) / '
                f"sum(rate(aimass_requests_total{{{INFERENCE}}}[{RATE}]))", "5xx share"),)),
    PanelSpec("Traffic", "Latency p50 / p99 by version", "Inference requests, by the version that answered", "s",
              tuple((f"histogram_quantile({q}, sum by (le, version) "
                     f"(rate(aimass_model_request_duration_seconds_bucket{{{JOB}}}[{RATE}])))", f"p{name} {{{{version}}}}")
                    for q, name in ((0.5, "50"), (0.99, "99")))),
    PanelSpec("Traffic", "Images per forward pass", "Dynamic batching: the mean batch", "short",
              ((f"sum(rate(aimass_inference_batch_images_sum{{{JOB}}}[{RATE}])) / "
                f"sum(rate(aimass_inference_batch_images_count{{{JOB}}}[{RATE}]))", "mean batch"),)),
    PanelSpec("Model", "Served version (release revision)", "1 while a version serves; a new line at each revision",
              "short", ((f"max by (version, revision) (aimass_model_info{{{JOB}}})", "{{version}} rev {{revision}}"),)),
    PanelSpec("Model", "Drift distance per statistic, against its threshold", "Alert AimassDriftDetected when past "
              "it (aimass monitor reports the window)", "short",
              ((f"max by (statistic) (aimass_drift_distance{{{JOB}}})", "{{statistic}}"),
               (f"max by (statistic) (aimass_drift_threshold{{{JOB}}})", "{{statistic}} threshold"))),
    PanelSpec("Model", "Live accuracy per version", "From feedback, against the model card's validation accuracy",
              "percentunit",
              ((f"avg by (version) (aimass_live_accuracy{{{JOB}}})", "live {{version}}"),
               (f"avg by (version) (aimass_model_reference_accuracy{{{JOB}}})", "validation {{version}}"))),
    PanelSpec("Model", "Predictions by class", "Images answered per second, by predicted class", "short",
              ((f"sum by (class) (rate(aimass_predictions_total{{{JOB}}}[{RATE}]))", "{{class}}"),)),
    PanelSpec("Feedback and capture", "Labelled images per second", "Feedback, by the version it judged", "short",
              ((f"sum by (version) (rate(aimass_feedback_total{{{JOB}}}[{RATE}]))", "{{version}}"),)),
    PanelSpec("Feedback and capture", "Capture written / dropped", "Records per second; dropped by reason (alert "
              "AimassCaptureDropping)", "short",
              ((f"sum(rate(aimass_capture_written_total{{{JOB}}}[{RATE}]))", "written"),
               (f"sum by (reason) (rate(aimass_capture_dropped_total{{{JOB}}}[{RATE}]))", "dropped {{reason}}"))),
    PanelSpec("Canary", "Canary weight", "Percent of requests the candidate answers (0: none, or shadow)", "percent",
              ((f"max(aimass_canary_weight{{{JOB}}})", "weight"),)),
    PanelSpec("Canary", "Canary checks: agreement and accuracy", "What `aimass release canary` judges: the share of "
              "images both models answer alike, each version's accuracy on labelled answers", "percentunit",
              ((f"sum(rate(aimass_shadow_agreed_images_total{{{JOB}}}[{RATE}])) / "
                f"sum(rate(aimass_shadow_compared_images_total{{{JOB}}}[{RATE}]))", "agreement"),
               (f"sum by (version) (rate(aimass_judged_correct_images_total{{{JOB}}}[{RATE}])) / "
                f"sum by (version) (rate(aimass_judged_images_total{{{JOB}}}[{RATE}]))", "accuracy {{version}}"))),
    PanelSpec("Canary", "Canary ends and background drops", "Promoted or aborted (alert AimassCanaryAborted); "
              "requests not mirrored for lack of CPU", "short",
              ((f"sum by (outcome) (increase(aimass_canary_ended_total{{{JOB}}}[1h]))", "{{outcome}} (1h)"),
               (f"sum(rate(aimass_shadow_dropped_total{{{JOB}}}[{RATE}]))", "not mirrored /s"),
               (f"max(aimass_canary_drift_detected{{{JOB}}})", "candidate drift"))),
)


def serving_dashboard() -> dict:
    """The dashboard as Grafana's JSON model."""
    source = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (dashboard.Dashboard("aimass serving").uid(UID).tags(["aimass", "mlops"]).refresh("30s")
             .time("now-6h", "now").timezone("browser")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
             .with_variable(dashboard.QueryVariable("job").label("release").datasource(source)
                            .query("label_values(aimass_model_info, job)").include_all(True).multi(True)))
    row = None
    for spec in PANELS:
        if spec.row != row:
            board = board.with_row(dashboard.Row(spec.row))
            row = spec.row
        panel = timeseries.Panel().title(spec.title).description(spec.description).unit(spec.unit) \
            .datasource(source).height(8).span(8)
        for ref, (query, legend) in zip("ABCDEFGH", spec.queries):
            panel = panel.with_target(prometheus.Dataquery().expr(query).legend_format(legend).ref_id(ref))
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def panel_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in board["panels"] if panel.get("type") != "row"
            for target in panel.get("targets", [])]


if __name__ == "__main__":
    json.dump(serving_dashboard(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
