"""The alert rules and the Grafana dashboard against a real Prometheus scraping a real `aimass serve` under a bounded
load with feedback: every rule evaluates without error and reads only series the server exports, and every panel's
query returns data (a metric renamed in the server without the rules or the dashboard fails here)."""
import re
import time

import httpx
import pytest
import yaml
from conftest import REPO_ROOT, free_port
from labelled_load import LabelledLoad
from prometheus_server import running_prometheus, wait_for_scrape

from aimass.config import load_config
from aimass.monitoring.dashboard import panel_queries, serving_dashboard
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server

MODEL = "fashion-mnist"
RULES_FILE = REPO_ROOT / "monitoring" / "aimass-serving.rules.yaml"  # the chart's rules (tests/k8s/test_alerts.py)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, monitored_model_dir, fashion_mnist_test_images):
    """(the rules as Prometheus evaluated them, the series names the server exported, panel title and query ->
    the series it returned) after a labelled load."""
    repo = tmp_path_factory.mktemp("alerts")
    config = load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                  "serving.monitor.interval_seconds=0.2"])
    registry = open_registry(config)
    registry.push(monitored_model_dir)
    open_release_backend(config, registry).deploy("v1", "test")
    images, labels = fashion_mnist_test_images
    with running_server(MODEL, ReleaseSource(config), config) as server:
        with running_prometheus(repo, [server.url.removeprefix("http://")], free_port(), [RULES_FILE]) as url:
            with LabelledLoad(server.url, MODEL, images[:500], labels[:500], server.holder.current.class_names):
                time.sleep(3)
            assert wait_for_scrape(url, 'count(aimass_live_accuracy{job="aimass-serving"})', 1) == 1
            time.sleep(1.5)  # a rule evaluation after the last scrape
            groups = httpx.get(f"{url}/api/v1/rules").json()["data"]["groups"]
            names = set(httpx.get(f"{url}/api/v1/label/__name__/values").json()["data"])
            panels = {(title, query): _instant(url, query) for title, query in panel_queries(serving_dashboard())}
    return [rule for group in groups for rule in group["rules"]], names, panels


def _instant(url: str, query: str) -> list:
    """What Grafana would get for the query's latest point, its variables as Grafana fills them for this release."""
    filled = query.replace("$job", "aimass-serving").replace("$__rate_interval", "1m")
    answer = httpx.get(f"{url}/api/v1/query", params={"query": filled}).json()
    assert answer["status"] == "success", (query, answer)
    return answer["data"]["result"]


def test_prometheus_loads_every_alert_of_the_rules_file(evaluated):
    rules, *_ = evaluated
    in_file = [rule["alert"] for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]
    assert sorted(rule["name"] for rule in rules) == sorted(in_file)


def test_every_rule_evaluates_without_error_on_a_real_scrape(evaluated):
    rules, *_ = evaluated
    assert {rule["name"]: (rule["health"], rule.get("lastError", "")) for rule in rules} == \
        {rule["name"]: ("ok", "") for rule in rules}


def test_every_series_a_rule_reads_is_exported_by_the_server(evaluated):
    rules, names, _ = evaluated
    read = {name for rule in rules for name in re.findall(r"\b(aimass_\w+|up)\{", rule["query"])}
    assert read and read <= names, read - names


def test_on_a_healthy_server_no_alert_fires(evaluated):
    rules, *_ = evaluated
    assert [rule["name"] for rule in rules if rule["state"] != "inactive"] == []


def test_every_panel_query_of_the_dashboard_returns_data(evaluated):
    *_, panels = evaluated
    assert len(panels) >= 20
    assert [title_and_query for title_and_query, series in panels.items() if not series] == []
