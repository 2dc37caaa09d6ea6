"""The chart's server pod under `podman kube play`, as close to the cluster as one machine gets.

What differs from a cluster, and why (each is the least change that lets the rendered pod run here):
- The pod shares the host's network (`--network host`): podman's bridge network cannot reach services on this
  machine (the S3 endpoint the pod pulls its model from). `--network host` refuses `containerPort` mappings, so
  the ports are dropped, and the server listens on a free port instead of 8080 (its `--port` argument).
- The Secret the pod reads its S3 keys from becomes a podman secret: podman resolves a `secretKeyRef` from a
  secret whose content is a flat JSON map of key to base64 value, not from a Kubernetes Secret document.
- Nothing probes the pod: the tests poll the readiness probe's own path, as the kubelet would.
Everything else (image, arguments, environment, security context, read-only root, emptyDir volumes) is the
rendered Deployment's pod template as `helm template` wrote it.
"""
from __future__ import annotations

import base64
import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from aimass.containers import podman_environment


def podman(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    finished = subprocess.run(["podman", *arguments], capture_output=True, text=True, env=podman_environment())
    if check and finished.returncode != 0:
        raise AssertionError(f"podman {' '.join(arguments)} failed: {finished.stderr.strip()}")
    return finished


def create_secret(name: str, data: dict[str, str]) -> None:
    """A podman secret that a pod's `secretKeyRef` to Secret `name` resolves from."""
    podman("secret", "rm", name, check=False)
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as content:
        json.dump(encoded, content)
        content.flush()
        podman("secret", "create", name, content.name)


def host_network_deployment(deployment: dict, port: int) -> dict:
    """The rendered Deployment, one replica, ready for `--network host` (see the module's docstring)."""
    playable = copy.deepcopy(deployment)
    playable["spec"]["replicas"] = 1
    for container in playable["spec"]["template"]["spec"]["containers"]:
        container.pop("ports", None)
        container["args"] = [f"--port={port}" if argument.startswith("--port=") else argument
                             for argument in container["args"]]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container.pop(probe, None)
    return playable


def play(deployment: dict, folder: Path) -> str:
    """`podman kube play --replace --network host` of `deployment`; returns the pod's id."""
    spec = folder / f"{deployment['metadata']['name']}.yaml"
    spec.write_text(yaml.safe_dump(deployment, sort_keys=False))
    output = podman("kube", "play", "--replace", "--network", "host", str(spec)).stdout.splitlines()
    return output[output.index("Pod:") + 1].strip()  # podman prints "Pod:", the id, "Container:", the ids


def stop(deployment: dict, folder: Path) -> None:
    spec = folder / f"{deployment['metadata']['name']}.yaml"
    if spec.is_file():
        podman("kube", "down", str(spec), check=False)


def readiness_path(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]


def wait_until_ready(base_url: str, path: str, pod: str, timeout_seconds: float = 180) -> float:
    """Seconds until `path` answers 200, as the readiness probe asks; fails with the container's log otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_seconds:
        try:
            if httpx.get(base_url + path, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    logs = podman("pod", "logs", pod, check=False)
    raise AssertionError(f"the pod did not turn ready in {timeout_seconds:.0f} s:\n{logs.stdout[-3000:]}"
                         f"{logs.stderr[-2000:]}")


def server_container(pod: str) -> dict:
    """`podman inspect` of the pod's model-server container."""
    containers = json.loads(podman("pod", "inspect", pod).stdout)["Containers"]
    (server,) = [container for container in containers if container["Name"].endswith("model-server")]
    return json.loads(podman("inspect", server["Id"]).stdout)[0]
