"""Canary releases on the embedded backend, over real HTTP with real models: a load of labelled requests flows while
the controller walks the candidate through its steps; a better candidate is promoted, a wrong one rolled back, and
no request fails on the way. The models are the tiny teacher and copies of it with classes swapped (conftest)."""
import re
import threading
from collections import Counter

import httpx
import pytest
from labelled_load import LabelledLoad

from aimass.canary.analysis import read_server_metrics
from aimass.canary.controller import ABORTED_EXIT, Clock, plan_canary, run_canary, start_canary
from aimass.canary.plan import ABORTED, PROMOTED, CanaryError, routes_to_candidate
from aimass.cli import main
from aimass.config import load_config
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server
from aimass.serving.client import tensor_request

MODEL = "fashion-mnist"


def make_config(repo, *overrides):
    return load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                "serving.monitor.interval_seconds=0.2", "serving.capture.sample_rate=0",
                                "release.canary.step_seconds=1", "release.canary.min_requests=100",
                                "release.canary.min_labelled=40", "release.canary.traffic_timeout_seconds=60",
                                *overrides])


def registered(config, *model_dirs):
    """A registry holding `model_dirs` as v1, v2, ... with v1 deployed; the release backend."""
    registry = open_registry(config)
    for model_dir in model_dirs:
        registry.push(model_dir)
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "test")
    return registry, backend


@pytest.fixture(scope="module")
def test_images(fashion_mnist_test_images):
    images, labels = fashion_mnist_test_images
    return images[:2000], labels[:2000]


def walk(config, registry, backend, server, candidate, test_images, **plan):
    """Run a whole canary of `candidate` under labelled load; (final state, its printed lines, the load)."""
    class_names = server.holder.current.class_names
    lines = []
    with LabelledLoad(server.url, MODEL, *test_images, class_names) as load:
        state = plan_canary(backend, registry, candidate, config.release.canary, "test", **plan)
        start_canary(backend, state)
        final = run_canary(backend, state, config.release.canary, lambda: read_server_metrics(server.url), "test",
                           lines.append, Clock())
    return final, lines, load


def wait_for(condition, seconds=10):
    deadline = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        deadline.wait(0.05)
    return condition()


# ---- a better candidate ----

def test_a_more_accurate_candidate_that_disagrees_with_production_is_promoted_through_every_step(
        tmp_path, weaker_model_dir, monitored_model_dir, test_images):
    config = make_config(tmp_path)
    registry, backend = registered(config, weaker_model_dir, monitored_model_dir)
    with running_server(MODEL, ReleaseSource(config), config) as server:
        final, lines, load = walk(config, registry, backend, server, "v2", test_images)
        assert wait_for(lambda: server.holder.current.version == "v2" and server.holder.canary is None)
        ended = read_server_metrics(server.url).series("aimass_canary_ended_total")
    assert final.outcome == PROMOTED, lines
    assert {labels["outcome"]: value for labels, value in ended} == {"promoted": 1, "aborted": 0}
    assert [line.split(":")[0] for line in lines[:-1]] == ["step 1/4 (shadow)", "step 2/4 (weight 10%)",
                                                           "step 3/4 (weight 50%)", "step 4/4 (weight 100%)"]
    assert all(re.search(r"; accuracy [^\[]+\[ok\]", line) for line in lines[:-1]), lines
    assert re.search(r"; agreement 0\.[0-7]\d* [^\[]+shown only: live accuracy decides", lines[0])  # they disagree
    assert lines[-1].startswith("promoted v2")
    assert load.failures() == [] and len(load.answers) > 400
    promoted = backend.status()
    assert promoted.model_version == "v2" and promoted.description.startswith("Canary v2 promoted")
    assert "accuracy" in promoted.lineage["canary_steps"] and promoted.lineage["canary_from_revision"] == "1"
    steps = [revision.description for revision in backend.history()[1:-1]]
    assert steps[0].startswith("Canary v2 started") and len(steps) == 4


# ---- a wrong candidate ----

def test_a_wrong_candidate_is_aborted_in_the_shadow_and_production_serves_alone(
        tmp_path, monitored_model_dir, wrong_model_dir, test_images):
    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, wrong_model_dir)
    with running_server(MODEL, ReleaseSource(config), config) as server:
        final, lines, load = walk(config, registry, backend, server, "v2", test_images)
        assert wait_for(lambda: server.holder.canary is None)
        assert server.holder.current.version == "v1"
        ended = read_server_metrics(server.url).series("aimass_canary_ended_total")
    assert {labels["outcome"]: value for labels, value in ended} == {"promoted": 0, "aborted": 1}
    assert final.outcome == ABORTED and lines[-1].startswith("aborted v2 at step 1/4 (shadow): accuracy")
    assert "max_accuracy_drop" in final.reason
    assert load.failures() == [] and {version for _, version in load.answers} == {"v1"}
    aborted = backend.status()
    assert aborted.model_version == "v1" and "aborted at step 1/4 (shadow): accuracy" in aborted.description


def test_a_wrong_candidate_aborted_at_a_weighted_step_fails_no_request_and_leaves_nothing_behind(
        tmp_path, monitored_model_dir, wrong_model_dir, test_images):
    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, wrong_model_dir)
    with running_server(MODEL, ReleaseSource(config), config) as server:
        final, lines, load = walk(config, registry, backend, server, "v2", test_images, steps=(50, 100),
                                  shadow_first=False)
        assert wait_for(lambda: server.holder.canary is None)
        after = [httpx.post(f"{server.url}/v2/models/{MODEL}/infer",
                            json=tensor_request(test_images[0][n:n + 1], f"after-{n}")) for n in range(40)]
    assert final.outcome == ABORTED and lines[0].startswith("step 1/2 (weight 50%)")
    assert "v2" in {version for _, version in load.answers}  # it did answer, wrongly, at 50%
    assert load.failures() == []
    assert {response.headers["x-model-version"] for response in after} == {"v1"}
    assert {response.json()["model_version"] for response in after} == {"v1"}


# ---- routing ----

@pytest.mark.parametrize("weight", [10, 50])
def test_the_candidate_answers_the_share_of_requests_its_weight_says(tmp_path, monitored_model_dir,
                                                                     weaker_model_dir, test_images, weight):
    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, weaker_model_dir)
    state = plan_canary(backend, registry, "v2", config.release.canary, "test", steps=(weight, 100),
                        shadow_first=False)
    start_canary(backend, state)
    image = test_images[0][:1]
    body = tensor_request(image)
    with running_server(MODEL, ReleaseSource(config), config) as server, httpx.Client() as client:
        versions = Counter(client.post(f"{server.url}/v2/models/{MODEL}/infer",
                                       json={**body, "id": f"share-{n}"}).headers["x-model-version"]
                           for n in range(1000))
        retries = {client.post(f"{server.url}/v2/models/{MODEL}/infer",
                               json={**body, "id": "the-same-id"}).json()["model_version"] for _ in range(10)}
    assert abs(versions["v2"] / 10 - weight) <= 4  # percent of 1000 requests
    assert len(retries) == 1 and retries == {"v2" if routes_to_candidate("the-same-id", weight) else "v1"}


def test_a_server_restarted_mid_canary_routes_as_the_release_history_says(tmp_path, monitored_model_dir,
                                                                          weaker_model_dir):
    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, weaker_model_dir)
    state = plan_canary(backend, registry, "v2", config.release.canary, "test", shadow_first=False)
    start_canary(backend, state)
    backend.record_canary(state.judged(_passed(state)), "Canary v2 step 2", "test")
    with running_server(MODEL, ReleaseSource(config), config) as server:
        first = (server.holder.canary.model.version, server.holder.canary.weight)
    with running_server(MODEL, ReleaseSource(config), config) as restarted:
        again = (restarted.holder.canary.model.version, restarted.holder.canary.weight)
    assert first == again == ("v2", 50)


def _passed(state):
    from aimass.canary.plan import StepResult

    return StepResult(state.weight, True, [], {})


# ---- refused, changing nothing ----

@pytest.fixture
def deployed(tmp_path, monitored_model_dir, weaker_model_dir):
    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, weaker_model_dir)
    return tmp_path, backend


def canary_cli(repo, *arguments):
    return main(["release", "canary", *arguments, "--profile", "tiny", "--repo", str(repo), "--set",
                 f"registry.model_name={MODEL}", "--set", "serving.port=1"])


@pytest.mark.parametrize("arguments, message", [
    (["v7"], "has no version v7"),
    (["v2", "--steps", "50,10,100"], "are not increasing"),
    (["v2", "--steps", "0,50,100"], "outside 1..100"),
    (["v2", "--steps", "10,50"], "not 100"),
    (["v2", "--steps", "ten"], "not a list of whole percentages"),
    (["v1"], "production already"),
])
def test_a_bad_canary_gets_one_clear_line_and_changes_nothing(deployed, capsys, arguments, message):
    repo, backend = deployed
    before = backend.history()
    assert canary_cli(repo, *arguments) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and message in error
    assert backend.history() == before


def test_a_second_canary_is_refused_while_one_runs(deployed, tmp_path, capsys):
    repo, backend = deployed
    config = make_config(repo)
    registry = open_registry(config)
    start_canary(backend, plan_canary(backend, registry, "v2", config.release.canary, "test"))
    before = backend.history()
    with pytest.raises(CanaryError, match="a canary of v2 is running"):
        plan_canary(backend, registry, "v2", config.release.canary, "test")
    assert canary_cli(repo, "v2") == 1 and "a canary of v2 is running" in capsys.readouterr().err
    assert backend.history() == before


def test_a_canary_without_a_reachable_server_is_refused_before_anything_changes(deployed, capsys):
    repo, backend = deployed
    before = backend.history()
    assert canary_cli(repo, "v2") == 1
    assert "cannot read the server's counters" in capsys.readouterr().err
    assert backend.history() == before


def test_abort_by_hand_ends_the_running_canary_and_the_controller_reports_it(deployed, capsys):
    repo, backend = deployed
    config = make_config(repo)
    start_canary(backend, plan_canary(backend, open_registry(config), "v2", config.release.canary, "alice"))
    assert canary_cli(repo, "--abort", "--triggered-by", "alice") == 0
    status = backend.status()
    assert status.running_canary is None and status.model_version == "v1"
    assert "aborted by hand by alice" in status.description
    assert canary_cli(repo, "--abort") == 1 and "no canary is running" in capsys.readouterr().err


def test_release_status_shows_the_canary_in_progress(deployed, capsys):
    repo, backend = deployed
    config = make_config(repo)
    start_canary(backend, plan_canary(backend, open_registry(config), "v2", config.release.canary, "alice"))
    assert main(["release", "status", "--profile", "tiny", "--repo", str(repo), "--set",
                 f"registry.model_name={MODEL}"]) == 0
    assert "canary: v2 at step 1/4 (shadow)" in capsys.readouterr().out


def test_the_aborted_exit_code_is_documented_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["release", "canary", "--help"])
    assert f"{ABORTED_EXIT} aborted" in capsys.readouterr().out


# ---- the Helm chart's servers: the canary arrives as a ConfigMap file ----

def test_a_pinned_server_routes_to_the_canary_its_file_names_and_drops_it_when_the_file_empties(
        tmp_path, s3_server, monkeypatch, monitored_model_dir, weaker_model_dir):
    import json
    import uuid

    from aimass.registry import manifest_sha256
    from aimass.serving import open_model_source

    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    config = make_config(tmp_path, "registry.backend=s3", f"registry.s3_endpoint={s3_server}",
                         "registry.s3_secure=false", f"registry.s3_bucket=models-{uuid.uuid4().hex[:8]}",
                         "serving.poll_seconds=0.05")
    registry = open_registry(config)
    production, candidate = registry.push(monitored_model_dir), registry.push(weaker_model_dir)
    canary_file = tmp_path / "canary" / "canary.json"
    canary_file.parent.mkdir()
    canary_file.write_text("{}")  # what the chart renders without a canary
    source = open_model_source(config, model_uri=registry.storage_uri("v1"),
                               model_sha256=manifest_sha256(production), canary_file=canary_file)
    with running_server(MODEL, source, config) as server:
        assert server.holder.canary is None
        state = plan_canary_state(registry, candidate, weight_step=1)
        canary_file.write_text(json.dumps(state.to_dict()))
        assert wait_for(lambda: server.holder.canary is not None)
        assert (server.holder.canary.model.version, server.holder.canary.weight) == ("v2", 50)
        metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()["parameters"]["canary"]
        assert metadata == {"version": "v2", "weight": 50, "shadow": False, "step": 1, "mirror": True}
        canary_file.write_text("{}")
        assert wait_for(lambda: server.holder.canary is None)
        assert server.holder.current.version == "v1"


def plan_canary_state(registry, candidate, weight_step):
    from aimass.canary.plan import CanaryState
    from aimass.registry import manifest_sha256

    return CanaryState(candidate.version, registry.storage_uri(candidate.version), manifest_sha256(candidate),
                       (10, 50, 100), False, weight_step, 1, "2026-12-05T00:00:00+00:00", "test")


# ---- the Helm backend's reader: every replica's counters through a real Prometheus ----

def test_through_prometheus_the_controller_sees_the_same_window_as_on_the_server(
        tmp_path, monitored_model_dir, weaker_model_dir, test_images):
    from conftest import free_port
    from prometheus_server import running_prometheus, wait_for_scrape

    from aimass.canary.analysis import measure_window, read_prometheus, routing_reported

    config = make_config(tmp_path)
    registry, backend = registered(config, monitored_model_dir, weaker_model_dir)
    state = plan_canary(backend, registry, "v2", config.release.canary, "test", steps=(50, 100), shadow_first=False)
    start_canary(backend, state)
    with running_server(MODEL, ReleaseSource(config), config) as server:
        target = server.url.removeprefix("http://")
        with running_prometheus(tmp_path, [target], free_port()) as prometheus:
            assert wait_for_scrape(prometheus, "aimass_canary_weight", 50) == 50
            before = read_prometheus(prometheus)
            assert routing_reported(before, state)
            image = test_images[0][:1]
            for n in range(200):
                httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=tensor_request(image, f"p-{n}"))
            server.shadow.drain()
            own = read_server_metrics(server.url)
            assert wait_for_scrape(prometheus, "sum(aimass_model_requests_total)", 200) == 200
            assert wait_for_scrape(prometheus, "sum(aimass_shadow_answers_total)", 200) == 200
            scraped = read_prometheus(prometheus)
    through_prometheus = measure_window(before, scraped, before, ("v2", "v1"))
    on_the_server = measure_window(before.__class__({}), own, own, ("v2", "v1"))
    assert through_prometheus.routed == on_the_server.routed and sum(through_prometheus.routed.values()) == 200
    assert through_prometheus.background == on_the_server.background
    assert through_prometheus.compared_images == on_the_server.compared_images == 200
