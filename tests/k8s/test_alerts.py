"""The serving release's alert rules: one template in the chart, rendered as a PrometheusRule and as the plain rules
file; every alert tested with Prometheus's own `promtool test rules`: a series that fires it and one that must not."""
import shutil
import subprocess

import pytest
import yaml
from k8s_render import CPU_VALUES, MONITORING_VALUES, REPO_ROOT, render_chart

RULES_FILE = REPO_ROOT / "monitoring" / "aimass-serving.rules.yaml"
JOB = 'job="aimass-serving",instance="10.0.0.7:8080"'
TARGET = {"job": "aimass-serving", "instance": "10.0.0.7:8080"}

# alert -> (input series that fire it, series that must not, when to look, labels of the alert that fires)
CASES = {
    "AimassServerDown": (
        [(f"up{{{JOB}}}", "0x10")], [(f"up{{{JOB}}}", "1x10")], "6m", TARGET),
    "AimassHighErrorRate": (
        [(f'aimass_requests_total{{{JOB},route="infer",code="200"}}', "0+100x20"),
         (f'aimass_requests_total{{{JOB},route="infer",code="500"}}', "0+5x20")],
        [(f'aimass_requests_total{{{JOB},route="infer",code="200"}}', "0+100x20"),
         (f'aimass_requests_total{{{JOB},route="infer",code="500"}}', "0+0x20"),
         (f'aimass_requests_total{{{JOB},route="feedback",code="500"}}', "0+50x20")],  # not inference
        "15m", {}),
    "AimassHighLatency": (
        [(f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="0.1"}}', "0+0x30"),
         (f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="1"}}', "0+100x30"),
         (f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="+Inf"}}', "0+100x30")],
        [(f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="0.1"}}', "0+100x30"),
         (f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="1"}}', "0+100x30"),
         (f'aimass_request_duration_seconds_bucket{{{JOB},route="infer",le="+Inf"}}', "0+100x30")],
        "20m", {}),
    "AimassDriftDetected": (
        [(f"aimass_drift_detected{{{JOB}}}", "1x30")],
        [(f"aimass_drift_detected{{{JOB}}}", "1x10 0x20")],  # drifted for ten minutes, then not
        "20m", {}),
    "AimassLiveAccuracyLow": (
        [(f'aimass_live_accuracy{{{JOB},version="v2"}}', "0.6x30"),
         (f'aimass_model_reference_accuracy{{{JOB},version="v2"}}', "0.8x30"),
         (f'aimass_feedback_total{{{JOB},version="v2"}}', "300x30")],
        [(f'aimass_live_accuracy{{{JOB},version="v2"}}', "0.6x30"),
         (f'aimass_model_reference_accuracy{{{JOB},version="v2"}}', "0.8x30"),
         (f'aimass_feedback_total{{{JOB},version="v2"}}', "100x30")],  # too few labels to say
        "20m", {**TARGET, "version": "v2"}),
    "AimassCaptureDropping": (
        [(f'aimass_capture_dropped_total{{{JOB},reason="store_error"}}', "0+10x30")],
        [(f'aimass_capture_dropped_total{{{JOB},reason="store_error"}}', "5x30")],  # dropped once, long ago
        "20m", {}),
    "AimassCanaryAborted": (
        [(f'aimass_canary_ended_total{{{JOB},outcome="aborted"}}', "0x10 1x20")],
        [(f'aimass_canary_ended_total{{{JOB},outcome="aborted"}}', "0x30"),
         (f'aimass_canary_ended_total{{{JOB},outcome="promoted"}}', "0x10 1x20")],
        "15m", {}),
}


def rendered_rule(*values, sets=("prometheusRule.enabled=true",)):
    objects = render_chart(*values, sets=sets)
    (rule,) = [item for item in objects if item["kind"] == "PrometheusRule"]
    return rule


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def expanded(annotations: dict, labels: dict) -> dict:
    return {key: value.replace("{{ $labels.instance }}", labels.get("instance", ""))
            .replace("{{ $labels.version }}", labels.get("version", "")) for key, value in annotations.items()}


def promtool(*arguments) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `make prometheus` installs Debian's package (the test command does)")
    return subprocess.run([binary, *arguments], capture_output=True, text=True, check=False)


def test_the_plain_rules_file_is_the_chart_template_rendered_with_its_defaults():
    assert rendered_rule(CPU_VALUES)["spec"] == yaml.safe_load(RULES_FILE.read_text())


def test_the_rules_pass_promtool_check_rules():
    checked = promtool("check", "rules", str(RULES_FILE))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_test_case():
    assert set(alert_rules()) == set(CASES)


@pytest.mark.parametrize("alert", CASES)
def test_each_alert_fires_on_a_breach_and_stays_quiet_otherwise(tmp_path, alert):
    firing, quiet, at, labels = CASES[alert]
    rule = alert_rules()[alert]
    expected = {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": expanded(rule["annotations"], labels)}
    tests = [{"interval": "1m", "input_series": [{"series": series, "values": values} for series, values in inputs],
              "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": alerts}]}
             for inputs, alerts in ((firing, [expected]), (quiet, []))]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": [str(RULES_FILE)], "evaluation_interval": "1m",
                                                        "tests": tests}))
    tested = promtool("test", "rules", str(tmp_path / "test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_thresholds_are_chart_values(tmp_path):
    (tmp_path / "values.yaml").write_text("prometheusRule: {enabled: true, maxErrorRate: 0.2, job: serving-pods}\n")
    rule = rendered_rule(CPU_VALUES, tmp_path / "values.yaml", sets=())
    (error_rate,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "AimassHighErrorRate"]
    assert "> 0.2" in error_rate["expr"] and 'job="serving-pods"' in error_rate["expr"]


def test_the_rule_is_off_by_default_and_on_with_the_monitoring_values():
    assert not [item for item in render_chart(CPU_VALUES) if item["kind"] == "PrometheusRule"]
    assert rendered_rule(CPU_VALUES, MONITORING_VALUES, sets=())["spec"]["groups"]
