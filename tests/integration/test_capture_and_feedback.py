"""After the deploy, over real HTTP: every answer carries a request id, sampled requests are captured by a background
writer into files, labels come back through the feedback endpoint and become live accuracy, and nothing of it can
fail or slow a request."""
import base64
import io
import re
import time

import httpx
import numpy as np
import pytest
from conftest import free_port
from PIL import Image

from aimass.capture.records import FEEDBACK, REQUESTS, parse_label_line, parse_request_line
from aimass.capture.store import open_capture_store
from aimass.config import load_config
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, running_server
from aimass.serving.client import encoded_request, tensor_request

MODEL = "fashion-mnist"
TOKEN = "capture-test-token-not-a-secret"


def make_config(repo, *overrides):
    return load_config("tiny", [f"data.repo_dir={repo}", f"registry.model_name={MODEL}",
                                "serving.capture.flush_seconds=0.2", "serving.monitor.interval_seconds=0.2",
                                *overrides])


@pytest.fixture
def config(tmp_path, monitored_model_dir):
    config = make_config(tmp_path)
    registry = open_registry(config)
    registry.push(monitored_model_dir)
    open_release_backend(config, registry).deploy("v1", "test")
    return config


@pytest.fixture
def server(config):
    with running_server(MODEL, ReleaseSource(config), config, token=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def test_images(fashion_mnist_test_images):
    images, labels = fashion_mnist_test_images
    return images[:400], labels[:400]


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def infer(url, images, request_id=None, headers=None):
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json=tensor_request(images, request_id),
                      headers={**AUTH, **(headers or {})})


def feedback(url, body, headers=AUTH):
    return httpx.post(f"{url}/v2/models/{MODEL}/feedback", json=body, headers=headers)


def captured(config, kind=REQUESTS):
    store = open_capture_store(config, MODEL)
    parse = parse_request_line if kind == REQUESTS else parse_label_line
    return [parse(line) for file in store.files(kind) for line in store.lines(file)]


def metric(url, name):
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


# ---- request ids ----

def test_the_callers_oip_id_is_returned_in_the_body_and_header(server, test_images):
    response = infer(server.url, test_images[0][:1], request_id="order-17")
    assert response.json()["id"] == "order-17" and response.headers["x-request-id"] == "order-17"


def test_without_an_oip_id_the_x_request_id_header_is_used(server, test_images):
    response = infer(server.url, test_images[0][:1], headers={"x-request-id": "trace-9"})
    assert response.json()["id"] == "trace-9" and response.headers["x-request-id"] == "trace-9"


def test_a_request_without_any_id_gets_a_new_one_each_time(server, test_images):
    first, second = (infer(server.url, test_images[0][:1]) for _ in range(2))
    assert re.fullmatch(r"[0-9a-f]{32}", first.json()["id"]) and first.json()["id"] != second.json()["id"]
    assert first.headers["x-request-id"] == first.json()["id"]


def test_v1_answers_carry_the_request_id_header(server, test_images):
    png = io.BytesIO()
    Image.fromarray(test_images[0][0, 0]).save(png, format="PNG")
    response = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", headers={**AUTH, "x-request-id": "v1-call"},
                          json={"instances": [{"image": {"b64": base64.b64encode(png.getvalue()).decode()}}]})
    assert response.status_code == 200 and response.headers["x-request-id"] == "v1-call"


def test_a_request_id_that_cannot_serve_as_one_gets_400(server, test_images):
    response = infer(server.url, test_images[0][:1], request_id="x" * 300)
    assert response.status_code == 400 and "request id" in response.json()["error"]


# ---- capture ----

def test_a_captured_request_holds_its_input_as_received_its_answer_and_no_credentials(config, test_images):
    png = io.BytesIO()
    Image.fromarray(test_images[0][0, 0]).save(png, format="PNG")
    body = encoded_request([png.getvalue()], request_id="with-a-file")
    with running_server(MODEL, ReleaseSource(config), config, token=TOKEN) as running:
        answer = httpx.post(f"{running.url}/v2/models/{MODEL}/infer", json=body, headers=AUTH).json()
        infer(running.url, test_images[0][:3], request_id="with-a-tensor")
    records = {record.request_id: record for record in captured(config)}  # the server stopped: all written
    assert records["with-a-file"].encoded == (png.getvalue(),)
    assert records["with-a-file"].labels == tuple(answer["outputs"][0]["data"])
    assert (records["with-a-file"].version, records["with-a-file"].revision) == ("v1", 1)
    assert np.array_equal(records["with-a-tensor"].pixels, test_images[0][:3])
    store_root = open_capture_store(config, MODEL).store.root
    assert all(TOKEN.encode() not in path.read_bytes() for path in store_root.rglob("*.jsonl"))


def test_sampling_captures_a_share_of_requests_chosen_by_id(tmp_path, monitored_model_dir, test_images):
    config = make_config(tmp_path, "serving.capture.sample_rate=0.25")
    registry = open_registry(config)
    registry.push(monitored_model_dir)
    open_release_backend(config, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config, token=TOKEN) as running:
        for position in range(200):
            assert infer(running.url, test_images[0][position:position + 1], f"r{position}").status_code == 200
    from aimass.capture.writer import is_sampled

    ids = {record.request_id for record in captured(config)}
    assert ids == {f"r{position}" for position in range(200) if is_sampled(f"r{position}", 0.25)}
    assert 25 <= len(ids) <= 75


def test_with_an_unreachable_store_every_request_is_answered_and_the_drops_are_counted(tmp_path, monitored_model_dir,
                                                                                      test_images, monkeypatch):
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = make_config(tmp_path, "serving.capture.uri=s3://capture/prod", f"registry.s3_endpoint={dead}",
                         "registry.s3_secure=false")
    local = make_config(tmp_path)  # the model itself comes from the local registry
    registry = open_registry(local)
    registry.push(monitored_model_dir)
    open_release_backend(local, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(local), config, token=TOKEN) as running:
        codes = [infer(running.url, test_images[0][i:i + 1]).status_code for i in range(50)]
        deadline = time.monotonic() + 60
        while (metric(running.url, 'aimass_capture_dropped_total{reason="store_error"}') or 0) < 50:
            assert time.monotonic() < deadline, "the drops were not counted"
            time.sleep(0.2)
        assert metric(running.url, "aimass_capture_written_total") == 0
    assert codes == [200] * 50


def test_a_full_capture_queue_drops_and_counts_instead_of_waiting():
    import prometheus_client

    from aimass.capture.writer import CaptureWriter
    from aimass.config import CaptureConfig

    registry = prometheus_client.CollectorRegistry()
    written = prometheus_client.Counter("written", "", registry=registry)
    dropped = prometheus_client.Counter("dropped", "", ["reason"], registry=registry)
    writer = CaptureWriter(store=None, settings=CaptureConfig(max_queue=2), written=written, dropped=dropped)
    for _ in range(5):  # the writer thread is not started: nothing leaves the queue
        writer.offer(object())
    assert registry.get_sample_value("dropped_total", {"reason": "queue_full"}) == 3


def test_capture_goes_to_an_s3_bucket_through_the_object_store(s3_server, tmp_path, monitored_model_dir,
                                                              test_images, monkeypatch):
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    config = make_config(tmp_path, "serving.capture.uri=s3://aimass-capture/production",
                         f"registry.s3_endpoint={s3_server}", "registry.s3_secure=false")
    local = make_config(tmp_path)
    registry = open_registry(local)
    registry.push(monitored_model_dir)
    open_release_backend(local, registry).deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(local), config, token=TOKEN) as running:
        infer(running.url, test_images[0][:2], request_id="to-s3")
    store = open_capture_store(config, MODEL)
    assert [key.key.split("/")[:3] for key in store.files(REQUESTS)] == [["production", "requests", MODEL]]
    assert [record.request_id for record in captured(config)] == ["to-s3"]


# ---- feedback ----

def test_labels_join_their_predictions_and_live_accuracy_matches_the_offline_accuracy(server, test_images):
    images, labels = test_images
    served = server.holder.current
    class_names = served.class_names
    for start in range(0, len(images), 40):
        assert infer(server.url, images[start:start + 40], f"batch-{start}").status_code == 200
        response = feedback(server.url, {"id": f"batch-{start}",
                                         "labels": [class_names[k] for k in labels[start:start + 40]]})
        assert response.status_code == 200, response.text
    offline = float((served.predict(images).argmax(axis=1) == labels).mean())
    view = httpx.get(f"{server.url}/v2/models/{MODEL}/monitor", headers=AUTH).json()
    assert view["feedback"]["labelled_images"] == len(images)
    assert abs(view["feedback"]["accuracy"] - offline) <= 0.01
    assert abs(metric(server.url, 'aimass_live_accuracy{version="v1"}') - offline) <= 0.01
    assert metric(server.url, 'aimass_feedback_total{version="v1"}') == len(images)


def test_a_second_label_for_the_same_id_replaces_the_first_and_counts_once(server, test_images):
    infer(server.url, test_images[0][:1], "twice")
    names = server.holder.current.class_names
    truth, wrong = names[test_images[1][0]], names[(test_images[1][0] + 1) % len(names)]
    assert feedback(server.url, {"id": "twice", "label": wrong}).status_code == 200
    assert feedback(server.url, {"feedback": [{"id": "twice", "label": truth}]}).status_code == 200
    view = httpx.get(f"{server.url}/v2/models/{MODEL}/monitor", headers=AUTH).json()
    assert view["feedback"]["labelled_images"] == 1
    assert metric(server.url, 'aimass_feedback_total{version="v1"}') == 1
    predicted = server.holder.current.predict(test_images[0][:1]).argmax()
    assert view["feedback"]["accuracy"] == float(predicted == test_images[1][0])


def test_an_unknown_class_gets_400_naming_the_classes(server, test_images):
    infer(server.url, test_images[0][:1], "some-id")
    response = feedback(server.url, {"id": "some-id", "label": "Spaceship"})
    assert response.status_code == 400
    assert "'Spaceship'" in response.json()["error"] and "Ankle boot" in response.json()["error"]


def test_an_id_the_server_never_answered_gets_404(server):
    response = feedback(server.url, {"id": "never-asked", "label": "Bag"})
    assert response.status_code == 404 and "aimass feedback import" in response.json()["error"]


@pytest.mark.parametrize("body, says", [({"label": "Bag"}, '"id"'), ({"id": "some-id"}, '"label"'),
                                        ({"id": "some-id", "labels": "Bag"}, "list"),
                                        ({"feedback": []}, "non-empty")])
def test_feedback_missing_an_id_or_label_gets_400_saying_which(server, test_images, body, says):
    infer(server.url, test_images[0][:1], "some-id")
    response = feedback(server.url, body)
    assert response.status_code == 400 and says in response.json()["error"]


def test_labels_for_a_request_of_several_images_must_number_its_images(server, test_images):
    infer(server.url, test_images[0][:3], "three")
    response = feedback(server.url, {"id": "three", "labels": ["Bag", "Bag"]})
    assert response.status_code == 400 and "had 3 images" in response.json()["error"]


def test_a_batch_with_one_bad_item_is_refused_whole(server, test_images):
    infer(server.url, test_images[0][:1], "good")
    response = feedback(server.url, {"feedback": [{"id": "good", "label": "Bag"}, {"id": "unknown", "label": "Bag"}]})
    assert response.status_code == 404
    assert httpx.get(f"{server.url}/v2/models/{MODEL}/monitor", headers=AUTH).json()["feedback"][
        "labelled_images"] == 0


def test_feedback_needs_the_bearer_token(server, test_images):
    infer(server.url, test_images[0][:1], "some-id")
    assert feedback(server.url, {"id": "some-id", "label": "Bag"}, headers={}).status_code == 401
    assert feedback(server.url, {"id": "some-id", "label": "Bag"},
                    headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_an_oversized_feedback_body_gets_413(server):
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/feedback", content=b"{" + b" " * (2 << 20) + b"}",
                          headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413


def test_labels_are_written_to_the_capture_store_beside_the_requests(config, test_images):
    with running_server(MODEL, ReleaseSource(config), config, token=TOKEN) as running:
        infer(running.url, test_images[0][:1], "labelled")
        feedback(running.url, {"id": "labelled", "label": "Bag"})
    labels = captured(config, FEEDBACK)
    assert [(label.request_id, label.labels, label.version, label.source) for label in labels] == \
        [("labelled", ("Bag",), "v1", "api")]


# ---- the monitor's view and metrics ----

def test_the_monitor_view_and_metrics_show_drift_once_traffic_is_darkened(server, test_images):
    darker = (test_images[0] // 2).astype(np.uint8)
    for start in range(0, len(darker), 100):
        infer(server.url, darker[start:start + 100])
    view = httpx.get(f"{server.url}/v2/models/{MODEL}/monitor", headers=AUTH).json()
    assert view["window"]["images"] == len(darker) and view["drift"]["detected"]
    brightness = next(c for c in view["drift"]["checks"] if c["statistic"] == "brightness")
    assert brightness["drifted"] and brightness["distance"] > brightness["threshold"]
    assert sum(view["class_mix"].values()) == pytest.approx(1, abs=1e-3)
    assert metric(server.url, "aimass_drift_detected") == 1
    assert metric(server.url, 'aimass_drift_distance{statistic="brightness"}') == pytest.approx(
        brightness["distance"], abs=1e-6)
    predictions = re.findall(r'^aimass_predictions_total\{class="[^"]+",version="v1"\} (\S+)$',
                             httpx.get(f"{server.url}/metrics").text, re.MULTILINE)
    assert sum(float(count) for count in predictions) == len(darker)


def test_dropped_capture_series_exist_at_zero_before_any_drop(server):
    assert metric(server.url, 'aimass_capture_dropped_total{reason="queue_full"}') == 0
    assert metric(server.url, 'aimass_capture_dropped_total{reason="store_error"}') == 0
    assert metric(server.url, "aimass_drift_detected") == 0
