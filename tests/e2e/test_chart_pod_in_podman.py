"""The chart's model-server pod in the project image under `podman kube play`: rendered by helm from the release's
values, pulling its model from a real S3 endpoint, serving OIP v2, and swapping models on a rollback through the
embedded release backend (see kube_play.py for what differs from a cluster)."""
import shutil

import httpx
import numpy as np
import pytest
import yaml

from aimass.config import load_config
from aimass.object_store import ACCESS_KEY_VARIABLE, SECRET_KEY_VARIABLE
from aimass.registry import open_registry
from aimass.releases import HelmReleaseBackend, chart_directory, open_release_backend
from aimass.serving.client import tensor_request
from conftest import free_port, moto_s3_server
from k8s.k8s_render import render_chart
from kube_play import (create_secret, host_network_deployment, play, readiness_path, server_container, stop,
                       wait_until_ready)

pytestmark = [pytest.mark.containers,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman kube play needs podman")]

ACCESS_KEY, SECRET_KEY = "e2e-access-key", "e2e-secret-key-0123456789"
MODEL = "e2e-model"
SITE_VALUES = ("replicaCount=1", "autoscaling.enabled=false", "podDisruptionBudget.enabled=false",
               "networkPolicy.enabled=false")


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def released(engine, s3_endpoint, tiny_teacher, data_repo, tmp_path_factory):
    """Two versions of the tiny model in S3, both deployed through the embedded backend (v2 is current)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(ACCESS_KEY_VARIABLE, ACCESS_KEY)
    monkeypatch.setenv(SECRET_KEY_VARIABLE, SECRET_KEY)
    state = tmp_path_factory.mktemp("release-state")
    config = load_config("tiny", [f"data.repo_dir={data_repo}", "registry.backend=s3",
                                  f"registry.s3_endpoint={s3_endpoint}", "registry.s3_secure=false",
                                  f"registry.s3_bucket=e2e-{free_port()}", f"registry.model_name={MODEL}",
                                  f"release.state_dir={state}"])
    registry = open_registry(config, MODEL)
    releases = open_release_backend(config, registry)
    for _ in range(2):
        releases.deploy(registry.push(tiny_teacher[0], metrics={"accuracy": 0.5}).version, "e2e test")
    create_secret("aimass-minio-credentials", {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY})  # chart default
    yield config, registry, releases
    monkeypatch.undo()


def current_deployment(config, registry, releases, folder) -> dict:
    """What `helm template` renders for the release's current revision: the values the Helm backend would send."""
    values = HelmReleaseBackend(config.release, registry, chart_directory(config), config.registry).model_values(
        registry.get(releases.status().model_version), "e2e test")
    values_file = folder / "model-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    objects = render_chart(values_file, sets=(*SITE_VALUES, "image.pullPolicy=Never"))
    (deployment,) = [item for item in objects if item["kind"] == "Deployment"]
    return deployment


def served_version(base_url: str, shape: list[int]) -> str:
    blank = tensor_request(np.zeros((1, *shape), dtype=np.uint8))
    response = httpx.post(f"{base_url}/v2/models/{MODEL}/infer", json=blank, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


@pytest.fixture(scope="module")
def serving_pod(released, tmp_path_factory, tiny_signature):
    config, registry, releases = released
    folder = tmp_path_factory.mktemp("kube")
    port = free_port()
    deployment = current_deployment(config, registry, releases, folder)
    pod = play(host_network_deployment(deployment, port), folder)
    base_url = f"http://127.0.0.1:{port}"
    seconds = wait_until_ready(base_url, readiness_path(deployment), pod)
    yield {"base_url": base_url, "pod": pod, "folder": folder, "port": port, "ready_seconds": seconds,
           "deployment": deployment}
    stop(host_network_deployment(deployment, port), folder)


def test_the_pod_turns_ready_and_serves_the_current_revision(serving_pod, tiny_signature):
    shape = list(tiny_signature.input_spec.shape)
    assert served_version(serving_pod["base_url"], shape) == "v2"


def test_the_pod_runs_as_the_chart_says_non_root_read_only_without_capabilities(serving_pod):
    container = server_container(serving_pod["pod"])
    assert container["Config"]["User"].split(":")[0] == "10001"
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert not container["EffectiveCaps"]


def test_a_rollback_through_the_embedded_backend_swaps_the_model_the_pod_serves(serving_pod, released,
                                                                                tiny_signature):
    config, registry, releases = released
    revision = releases.rollback(None, "e2e test")
    assert revision.model_version == "v1"
    deployment = current_deployment(config, registry, releases, serving_pod["folder"])
    pod = play(host_network_deployment(deployment, serving_pod["port"]), serving_pod["folder"])
    wait_until_ready(serving_pod["base_url"], readiness_path(deployment), pod)
    assert served_version(serving_pod["base_url"], list(tiny_signature.input_spec.shape)) == "v1"
