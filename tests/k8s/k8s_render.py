"""Real helm v4 and kubectl v1.35 binaries (installed into the venv by scripts/install_k8s_tools.py) render what a
cluster would get; kubernetes-validate checks it against the API schemas of two Kubernetes releases. No cluster
runs here, so nothing is applied."""
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "aimass-serving"
CPU_VALUES = CHART / "ci" / "cpu-values.yaml"
GPU_VALUES = CHART / "ci" / "gpu-values.yaml"
MONITORING_VALUES = CHART / "ci" / "monitoring-values.yaml"  # on top of CPU_VALUES
KUBERNETES_VERSIONS = ["1.34.0", "1.35.0"]
# Custom resources have no schema in the Kubernetes API; these are the only ones aimass renders.
CUSTOM_RESOURCE_KINDS = {"ServiceMonitor", "PrometheusRule"}
BIN = Path(sys.prefix) / "bin"


def tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make k8s-tools` (the test command does)")
    return path


def run_tool(name: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool(name)), *arguments], capture_output=True, text=True, check=False)


def render_chart(*values_files: Path, sets: tuple[str, ...] = (), release: str = "aimass-serving") -> list[dict]:
    arguments = ["template", release, str(CHART), "--namespace", "aimass-serving"]
    arguments += [part for path in values_files for part in ("-f", str(path))]
    arguments += [part for setting in sets for part in ("--set", setting)]
    finished = run_tool("helm", *arguments)
    assert finished.returncode == 0, finished.stderr
    return [document for document in yaml.safe_load_all(finished.stdout) if document]


def kustomize(folder: Path) -> list[dict]:
    finished = run_tool("kubectl", "kustomize", str(folder))
    assert finished.returncode == 0, finished.stderr
    return [document for document in yaml.safe_load_all(finished.stdout) if document]


def schema_errors(objects: list[dict], kubernetes_version: str) -> list[str]:
    errors = []
    for item in objects:
        if item["kind"] in CUSTOM_RESOURCE_KINDS:
            continue
        try:
            kubernetes_validate.validate(item, kubernetes_version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            errors.append(f"{item['kind']}/{item['metadata']['name']}: {error}")
    return errors


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for item in objects:
        spec = item.get("spec", {})
        if item["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        template = spec.get("template", {}).get("spec")
        if template is not None:
            specs.append((f"{item['kind']}/{item['metadata']['name']}", template))
        elif item["kind"] == "Pod":
            specs.append((f"Pod/{item['metadata']['name']}", item["spec"]))
    return specs


_RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                            "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """What keeps a pod spec from Pod Security "restricted" (Kubernetes' policy, control by control), plus a
    read-only root filesystem, which aimass requires on top."""
    problems = []
    pod_context = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is of type {kinds - _RESTRICTED_VOLUME_TYPES}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, context = container["name"], container.get("securityContext", {})
        effective = {**pod_context, **context}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if effective.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if effective.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        if effective.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: uses a hostPort")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
    return problems
