"""The model server over real HTTP (uvicorn on 127.0.0.1), following a real release history and registry."""
import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port

from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.object_store import ObjectStoreError
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from aimass.serving import ReleaseSource, load_served_model, running_server
from aimass.serving.client import tensor_request

MODEL = "fashion-mnist-classifier"
TOKEN = "test-token-not-a-secret"


@pytest.fixture
def config(tmp_path):
    return load_config("tiny", [f"data.repo_dir={tmp_path}", f"registry.model_name={MODEL}", "serving.poll_seconds=0.05",
                                "serving.max_body_bytes=200000"])


@pytest.fixture
def registry(config, tiny_teacher):
    registry = open_registry(config)
    registry.push(tiny_teacher[0])  # v1
    registry.push(tiny_teacher[0])  # v2: the same bytes, so responses tell versions apart only by their label
    return registry


@pytest.fixture
def releases(config, registry):
    return open_release_backend(config, registry)


@pytest.fixture
def server(config, releases):
    releases.deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config) as running:
        yield running


@pytest.fixture
def test_images(tiny_splits_dir):
    image_sets, _ = load_image_sets(tiny_splits_dir)
    return np.array(image_sets["test"].images[:8]), image_sets["test"].labels[:8]


def infer_json(images: np.ndarray) -> dict:
    return tensor_request(images)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ---- the protocol, through KServe's own client ----

@pytest.mark.parametrize("binary_data", [True, False], ids=["binary-tensor-extension", "json"])
def test_kserve_inference_rest_client_gets_the_models_predictions(server, test_images, tiny_teacher, binary_data):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    images, _ = test_images

    async def ask():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        tensor = InferInput(name="images", shape=list(images.shape), datatype="UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary_data)
        try:
            ready = await client.is_server_ready(server.url) and await client.is_model_ready(server.url, MODEL)
            response = await client.infer(server.url, InferRequest(MODEL, infer_inputs=[tensor]), model_name=MODEL)
        finally:
            await client.close()
        return ready, response

    ready, response = asyncio.run(ask())
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    expected = load_served_model(MODEL, "v1", None, tiny_teacher[0]).predict(images)
    assert ready
    assert outputs["label_index"].tolist() == expected.argmax(axis=1).tolist()
    class_names = load_served_model(MODEL, "v1", None, tiny_teacher[0]).class_names
    assert [name.decode() if isinstance(name, bytes) else name for name in outputs["label"].tolist()] == \
        [class_names[k] for k in expected.argmax(axis=1)]
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("datatype, shape", [("UINT8", [8, 784]), ("UINT8", [8, 1, 28, 28]), ("FP32", [8, 28, 28])])
def test_every_accepted_image_encoding_gets_the_same_labels(server, test_images, datatype, shape):
    images, _ = test_images
    pixels = images / 255.0 if datatype == "FP32" else images
    body = {"inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": pixels.ravel().tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body).json()
    reference = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=infer_json(images)).json()
    assert response["outputs"][0]["data"] == reference["outputs"][0]["data"]


def test_model_metadata_describes_inputs_outputs_classes_and_version(server):
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    assert metadata["versions"] == ["v1"] and metadata["parameters"]["release_revision"] == 1
    assert metadata["parameters"]["class_names"][0] == "T-shirt/top"
    preprocessing = metadata["parameters"]["preprocessing"]
    assert (preprocessing["channels"], preprocessing["height"], preprocessing["width"]) == (1, 28, 28)
    assert metadata["parameters"]["dataset"] == "fashion-mnist"


def test_health_endpoints_answer(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}


def test_metrics_count_requests_and_name_the_served_version(server, test_images):
    httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=infer_json(test_images[0]))
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'aimass_requests_total{code="200",route="infer"} 1.0' in metrics
    assert f'aimass_model_info{{model="{MODEL}",revision="1",version="v1"}} 1.0' in metrics
    assert 'aimass_request_duration_seconds_count{route="infer"} 1.0' in metrics


def test_dynamic_batching_answers_each_request_with_its_own_images(config, releases, test_images):
    releases.deploy("v1", "test")
    settings = config.with_serving(dynamic_batching=True, max_batch_delay_ms=20)
    images, _ = test_images
    with running_server(MODEL, ReleaseSource(config), settings) as running:
        async def ask_concurrently():
            async with httpx.AsyncClient() as client:
                return await asyncio.gather(*[
                    client.post(f"{running.url}/v2/models/{MODEL}/infer", json=infer_json(images[i:i + 1]))
                    for i in range(len(images))])

        responses = asyncio.run(ask_concurrently())
        metrics = httpx.get(f"{running.url}/metrics").text
    forward_passes = float(re.search(r"^aimass_inference_batch_images_count (\S+)$", metrics, re.MULTILINE).group(1))
    labels = [response.json()["outputs"][0]["data"][0] for response in responses]
    unbatched_settings = config.with_serving(dynamic_batching=False)
    with running_server(MODEL, ReleaseSource(config), unbatched_settings) as unbatched:
        expected = httpx.post(f"{unbatched.url}/v2/models/{MODEL}/infer", json=infer_json(images)).json()
    assert labels == expected["outputs"][0]["data"]
    assert forward_passes < len(images)  # requests were merged


# ---- bad requests get 4xx with a message, never a 5xx ----

def _shape(images):
    body = infer_json(images)
    body["inputs"][0]["shape"] = [len(images), 27, 29]
    return body


BAD_REQUESTS = {
    "malformed JSON": (b'{"inputs": [', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 400, "must be a JSON object"),
    "no inputs": (b"{}", 400, '"inputs" must be a list'),
    "wrong shape": (_shape, 400, "shape [1, 27, 29] is not accepted"),
    "wrong dtype": (lambda images: {"inputs": [{**infer_json(images)["inputs"][0], "datatype": "BYTES"}]}, 400,
                    "datatype 'BYTES' is not accepted"),
    "too few values": (lambda images: {"inputs": [{**infer_json(images)["inputs"][0], "data": [1, 2, 3]}]}, 400,
                       "holds 3 values"),
    "pixel out of range": (lambda images: {"inputs": [{**infer_json(images)["inputs"][0],
                                                       "data": [300] * 784}]}, 400, "between 0 and 255"),
    "text pixels": (lambda images: {"inputs": [{**infer_json(images)["inputs"][0], "data": ["a"] * 784}]}, 400,
                    "numbers only"),
    "unknown output": (lambda images: {**infer_json(images), "outputs": [{"name": "embedding"}]}, 400,
                       "unknown output"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_gets_400_with_a_message(server, test_images, case):
    payload, status, message = BAD_REQUESTS[case]
    body = payload if isinstance(payload, bytes) else httpx.Request("POST", "/", json=payload(
        test_images[0][:1])).read()
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_an_oversized_body_gets_413(server):
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=b"0" * 200_001)
    assert response.status_code == 413 and "exceeds 200000 bytes" in response.json()["error"]


def test_an_oversized_chunked_body_gets_413(server):
    def chunks():
        for _ in range(30):
            yield b"0" * 10_000

    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", content=chunks())
    assert response.status_code == 413


def test_an_unknown_model_name_gets_404(server, test_images):
    response = httpx.post(f"{server.url}/v2/models/resnet/infer", json=infer_json(test_images[0]))
    assert response.status_code == 404 and "serves 'fashion-mnist-classifier'" in response.json()["error"]


def test_with_a_token_requests_without_it_get_401_and_probes_stay_open(config, releases, test_images):
    releases.deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config, token=TOKEN) as running:
        infer_url = f"{running.url}/v2/models/{MODEL}/infer"
        missing = httpx.post(infer_url, json=infer_json(test_images[0]))
        wrong = httpx.post(infer_url, json=infer_json(test_images[0]), headers={"Authorization": "Bearer nope"})
        right = httpx.post(infer_url, json=infer_json(test_images[0]), headers={"Authorization": f"Bearer {TOKEN}"})
        probe = httpx.get(f"{running.url}/v2/health/ready")
    assert (missing.status_code, wrong.status_code, right.status_code, probe.status_code) == (401, 401, 200, 200)
    assert missing.headers["www-authenticate"] == "Bearer" and "bearer token" in missing.json()["error"]


def test_before_anything_is_deployed_the_server_is_live_but_not_ready(config, registry, releases, test_images):
    with running_server(MODEL, ReleaseSource(config), config) as running:
        assert httpx.get(f"{running.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 503
        assert httpx.post(f"{running.url}/v2/models/{MODEL}/infer", json=infer_json(test_images[0])).status_code \
            == 503
        releases.deploy("v1", "test")
        wait_for(lambda: httpx.get(f"{running.url}/v2/health/ready").status_code == 200)


# ---- following the release ----

def served_version(url: str, images: np.ndarray) -> str:
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json=infer_json(images)).json()["model_version"]


def test_a_new_release_is_served_after_it_is_checked(server, releases, test_images):
    releases.deploy("v2", "test")
    wait_for(lambda: served_version(server.url, test_images[0]) == "v2")


def test_a_corrupted_artifact_is_refused_and_the_previous_version_keeps_serving(server, config, releases,
                                                                               test_images):
    stored = Path(config.data.repo_dir) / config.registry.local_dir / "models" / MODEL / "versions" / "v2" / "files"
    weights = stored / "model.safetensors"
    corrupted = bytearray(weights.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0x01  # one bit of one byte
    weights.write_bytes(bytes(corrupted))

    releases.deploy("v2", "test")
    wait_for(lambda: "sha256" in (httpx.get(f"{server.url}/v2/models/{MODEL}").json()["parameters"]["load_error"]
                                  or ""))
    assert served_version(server.url, test_images[0]) == "v1"
    assert "still serving v1" in httpx.get(f"{server.url}/v2/models/{MODEL}").json()["parameters"]["load_error"]
    assert 'aimass_model_loads_total{outcome="failure"} 1.0' in httpx.get(f"{server.url}/metrics").text


def test_a_stopped_object_store_fails_the_deploy_and_serving_continues(tmp_path, tiny_teacher, tiny_splits_dir,
                                                                       test_images, monkeypatch):
    from aimass.deployment.stage import deploy
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    port = free_port()
    store_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    store_server.start()
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", f"registry.model_name={MODEL}", "serving.poll_seconds=0.05",
                                  "registry.backend=s3", f"registry.s3_endpoint=127.0.0.1:{port}",
                                  "registry.s3_secure=false", f"registry.s3_bucket=models-{uuid.uuid4().hex[:12]}"])
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    releases = open_release_backend(config, registry)
    releases.deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config) as running:
        store_server.stop()
        with pytest.raises(ObjectStoreError, match=f"127.0.0.1:{port} is unreachable"):
            deploy(config, tiny_teacher[0], tiny_splits_dir, {}, "test")
        time.sleep(0.3)  # several polls of the release pointer
        assert served_version(running.url, test_images[0]) == "v1"
    assert [r.revision for r in releases.history()] == [1]


def test_rollback_under_load_loses_no_request_and_switches_within_a_second(server, releases, test_images):
    """A bounded load loop (4 clients) runs while v2 is deployed and then rolled back to v1."""
    images = test_images[0][:1]
    seen: list[tuple[float, int, str]] = []  # (time, status, version)
    stop = threading.Event()

    def client_loop():
        with httpx.Client() as client:
            while not stop.is_set():
                response = client.post(f"{server.url}/v2/models/{MODEL}/infer", json=infer_json(images))
                version = response.json().get("model_version", "") if response.status_code == 200 else ""
                seen.append((time.monotonic(), response.status_code, version))

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        deployed_at = time.monotonic()
        releases.deploy("v2", "test")
        wait_for(lambda: seen[-1][2] == "v2", timeout=5)
        time.sleep(0.5)
        rolled_back_at = time.monotonic()
        releases.rollback(1, "test")
        wait_for(lambda: seen[-1][2] == "v1", timeout=5)
        time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join()

    assert len(seen) > 50 and all(status == 200 for _, status, _ in seen)
    first_v2 = min(t for t, _, version in seen if version == "v2" and t > deployed_at)
    last_v2 = max(t for t, _, version in seen if version == "v2")
    assert first_v2 - deployed_at < 1.0
    assert last_v2 - rolled_back_at < 1.0
    assert releases.status().description == "Rollback to 1"
    # v1 was still loaded: the rollback swapped it back without pulling, compiling or warming anything again
    assert 'aimass_model_loads_total{outcome="success"} 2.0' in httpx.get(f"{server.url}/metrics").text


def test_a_model_directory_can_be_served_as_is(tiny_teacher, config, test_images):
    from aimass.serving import DirectorySource

    with running_server(MODEL, DirectorySource(tiny_teacher[0]), config) as running:
        assert served_version(running.url, test_images[0]) == "local"


# ---- a version pinned by storage URI and manifest sha256, as the Helm chart runs the server ----

@pytest.fixture
def s3_registry(s3_server, tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", f"registry.model_name={MODEL}", "registry.backend=s3",
                                  f"registry.s3_endpoint={s3_server}", "registry.s3_secure=false",
                                  f"registry.s3_bucket=models-{uuid.uuid4().hex[:12]}"])
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    return config, registry


def test_a_pinned_storage_uri_is_served_when_its_manifest_matches(s3_registry, test_images):
    from aimass.registry import manifest_sha256
    from aimass.serving import open_model_source

    config, registry = s3_registry
    uri = registry.storage_uri("v1")
    source = open_model_source(config, model_uri=uri, model_sha256=manifest_sha256(registry.get("v1")))
    with running_server(MODEL, source, config) as running:
        assert served_version(running.url, test_images[0]) == "v1"


def test_a_pinned_storage_uri_whose_manifest_differs_is_never_served(s3_registry):
    from aimass.serving import open_model_source

    config, registry = s3_registry
    source = open_model_source(config, model_uri=registry.storage_uri("v1"), model_sha256="0" * 64)
    with running_server(MODEL, source, config) as running:
        wait_for(lambda: "pinned" in httpx.get(f"{running.url}/v2/models/{MODEL}").json()["error"])
        answer = httpx.get(f"{running.url}/v2/models/{MODEL}")
        assert answer.status_code == 503 and f"but {'0' * 64} was pinned: refusing it" in answer.json()["error"]
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 503


@pytest.mark.parametrize("uri, problem", [
    ("s3://bucket/models/fashion-mnist-classifier/v1", "is not s3://<bucket>/models/<name>/versions/v<N>"),
    ("s3://bucket/models/another-model/versions/v1", "is for model 'another-model'"),
])
def test_a_malformed_or_foreign_storage_uri_is_refused_at_start(config, uri, problem):
    from aimass.registry import RegistryError
    from aimass.serving import open_model_source

    with pytest.raises(RegistryError, match=re.escape(problem)):
        open_model_source(config, model_uri=uri)


def test_a_local_registry_version_has_a_file_uri_that_serves_it_too(config, registry, test_images):
    from aimass.serving import open_model_source

    assert registry.storage_uri("v2").startswith("file:///")
    with running_server(MODEL, open_model_source(config, model_uri=registry.storage_uri("v2")),
                        config) as running:
        assert served_version(running.url, test_images[0]) == "v2"


# ---- the command ----

def test_aimass_serve_answers_until_sigterm(config, releases, test_images):
    releases.deploy("v1", "test")
    command = [sys.executable, "-m", "aimass.cli", "serve", "--profile", "tiny", "--port", "0",
               "--repo", config.data.repo_dir, "--set", f"registry.model_name={MODEL}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        try:
            url = re.search(r"at (http://\S+)/v2/models/", server.stdout.readline()).group(1)
            assert served_version(url, test_images[0]) == "v1"
        finally:
            server.send_signal(signal.SIGTERM)
        # uvicorn finishes requests in flight, then re-raises the signal: the exit status says SIGTERM ended it
        assert server.wait(timeout=30) == -signal.SIGTERM
        assert "Traceback" not in server.stderr.read()


def test_aimass_serve_of_a_model_directory_names_it_after_its_own_data_set(tiny_teacher, digits_folder,
                                                                            tmp_path):
    """Served from a repository holding another data set (digits), the Fashion-MNIST model keeps its own name."""
    from conftest import init_dvc_repo

    from aimass.cli import main

    repo = init_dvc_repo(tmp_path / "digits-repo")
    assert main(["data", "import", "--source", str(digits_folder), "--repo", str(repo)]) == 0
    command = [sys.executable, "-m", "aimass.cli", "serve", "--profile", "tiny", "--port", "0", "--repo", str(repo),
               "--model-dir", str(tiny_teacher[0])]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        try:
            first_line = server.stdout.readline()
        finally:
            server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert first_line.startswith("serving fashion-mnist at "), first_line


def test_aimass_serve_on_a_busy_port_says_so(config, releases, capsys):
    from aimass.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--profile", "tiny", "--port", str(busy.getsockname()[1]),
                     "--repo", config.data.repo_dir, "--set", f"registry.model_name={MODEL}"]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_a_release_of_another_models_version_is_reported_and_the_served_model_stays(config, releases, tiny_teacher,
                                                                                     test_images):
    from aimass.registry import ModelRegistry

    releases.deploy("v1", "test")
    with running_server(MODEL, ReleaseSource(config), config) as running:
        assert served_version(running.url, test_images[0]) == "v1"
        other = ModelRegistry(releases.registry.store, "another-data-set")
        other.push(tiny_teacher[0])
        open_release_backend(config, other).deploy("v1", "test")  # the same release, now for another model
        wait_for(lambda: "serves another-data-set" in (httpx.get(f"{running.url}/v2/models/{MODEL}").json()
                                                        ["parameters"]["load_error"] or ""))
        assert served_version(running.url, test_images[0]) == "v1"
