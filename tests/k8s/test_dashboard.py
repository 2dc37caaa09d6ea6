"""The Grafana dashboard: generated from code (aimass/monitoring/dashboard.py), shipped by the chart as a ConfigMap
the Grafana sidecar loads. Its queries are evaluated against a real Prometheus in
tests/integration/test_observability_in_prometheus.py."""
import json

from k8s_render import CHART, CPU_VALUES, MONITORING_VALUES, render_chart

from aimass.monitoring.dashboard import PANELS, panel_queries, serving_dashboard

SHIPPED = CHART / "dashboards" / "aimass-serving.json"


def test_the_shipped_dashboard_is_what_the_code_builds():
    assert json.loads(SHIPPED.read_text()) == serving_dashboard(), "run `make dashboard` and commit the JSON"


def test_every_panel_selects_the_release_with_the_job_variable_and_rates_with_the_rate_interval():
    queries = panel_queries(serving_dashboard())
    assert len(queries) == sum(len(spec.queries) for spec in PANELS)
    assert all('job=~"$job"' in query for _, query in queries)
    assert all("$__rate_interval" in query for _, query in queries if "rate(" in query)


def test_the_chart_ships_it_as_a_configmap_the_grafana_sidecar_loads():
    (config_map,) = [item for item in render_chart(CPU_VALUES, MONITORING_VALUES)
                     if item["kind"] == "ConfigMap" and item["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["aimass-serving.json"]) == serving_dashboard()


def test_the_dashboard_is_off_by_default():
    assert not [item for item in render_chart(CPU_VALUES) if item["metadata"]["name"].endswith("-dashboard")]
