"""The aimass-serving chart, rendered by the real helm v4 and checked against the Kubernetes API schemas."""
import re
import tomllib

import pytest
import yaml
from k8s_render import (
    CHART,
    CPU_VALUES,
    GPU_VALUES,
    KUBERNETES_VERSIONS,
    MONITORING_VALUES,
    REPO_ROOT,
    pod_specs,
    render_chart,
    restricted_violations,
    run_tool,
    schema_errors,
)

from aimass.config import PROJECT_IMAGE
from aimass.releases import chart_fullname

VALUE_SETS = {"cpu": (CPU_VALUES,), "gpu": (GPU_VALUES,), "monitoring": (CPU_VALUES, MONITORING_VALUES)}


def by_kind(objects: list[dict], kind: str) -> dict:
    (found,) = [item for item in objects if item["kind"] == kind]
    return found


def server_container(objects: list[dict]) -> dict:
    return by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_passes(values):
    files = [part for path in VALUE_SETS[values] for part in ("-f", str(path))]
    finished = run_tool("helm", "lint", "--strict", str(CHART), *files)
    assert finished.returncode == 0, finished.stdout + finished.stderr


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_rendered_object_matches_the_kubernetes_schemas(values, kubernetes_version):
    assert schema_errors(render_chart(*VALUE_SETS[values]), kubernetes_version) == []


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_pod_meets_pod_security_restricted(values):
    specs = pod_specs(render_chart(*VALUE_SETS[values]))
    assert specs and {name: restricted_violations(spec) for name, spec in specs} == {name: [] for name, _ in specs}


def test_the_cpu_values_render_the_full_set_of_objects():
    kinds = sorted(item["kind"] for item in render_chart(CPU_VALUES))
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget",
                     "Service", "ServiceAccount"]


def test_without_a_canary_the_servers_read_an_empty_canary_file_mounted_as_a_directory():
    objects = render_chart(CPU_VALUES)
    (config_map,) = [item for item in objects if item["kind"] == "ConfigMap"]
    (deployment,) = [item for item in objects if item["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert config_map["data"] == {"canary.json": "{}"}
    assert "--canary-file=/etc/aimass/canary/canary.json" in container["args"]
    mount = next(mount for mount in container["volumeMounts"] if mount["name"] == "canary")
    assert mount["mountPath"] == "/etc/aimass/canary" and "subPath" not in mount  # updated in place, no restart


def test_gpu_values_request_the_accelerator_on_a_gpu_node_and_tolerate_its_taint():
    objects = render_chart(GPU_VALUES)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert server_container(objects)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "--set=serving.device=auto" in server_container(objects)["args"]
    assert by_kind(objects, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"


def test_cpu_values_ask_for_no_accelerator_and_serve_on_the_cpu():
    objects = render_chart(CPU_VALUES)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in server_container(objects)["resources"].get("limits", {})
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "--set=serving.device=cpu" in server_container(objects)["args"]


def test_probes_use_the_servers_health_routes():
    container = server_container(render_chart(CPU_VALUES))
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # startupTimeoutSeconds


def test_the_revision_pins_one_model_version_by_uri_and_sha256():
    values = yaml.safe_load(CPU_VALUES.read_text())["model"]
    objects = render_chart(CPU_VALUES)
    args = server_container(objects)["args"]
    assert f"--model-uri={values['storageUri']}" in args and f"--model-sha256={values['sha256']}" in args
    annotations = by_kind(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["aimass.io/model-version"] == "v3"
    assert annotations["aimass.io/lineage-git_commit"] == "1f2e3d4c5b6a79880716253443526170819a0b1c"


def test_a_new_model_version_changes_the_pod_template_so_kubernetes_rolls_it_out_without_downtime():
    before = by_kind(render_chart(CPU_VALUES), "Deployment")
    after = by_kind(render_chart(CPU_VALUES, sets=("model.version=v4",)), "Deployment")
    assert before["spec"]["template"] != after["spec"]["template"]
    assert before["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_every_object_carries_the_standard_labels():
    for item in render_chart(*VALUE_SETS["gpu"]) + render_chart(CPU_VALUES):
        labels = item["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{item['kind']} lacks {key}"


def test_autoscaling_leaves_replicas_to_the_autoscaler_and_a_single_replica_gets_no_disruption_budget():
    autoscaled = render_chart(CPU_VALUES)
    assert "replicas" not in by_kind(autoscaled, "Deployment")["spec"]
    single = render_chart(CPU_VALUES, sets=("autoscaling.enabled=false", "replicaCount=1"))
    assert by_kind(single, "Deployment")["spec"]["replicas"] == 1
    assert not [item for item in single if item["kind"] in ("PodDisruptionBudget", "HorizontalPodAutoscaler")]


def test_credentials_and_the_token_come_from_existing_secrets_by_name_only():
    objects = render_chart(CPU_VALUES)
    assert not [item for item in objects if item["kind"] == "Secret"]
    container = server_container(objects)
    for variable in container["env"]:
        if variable["name"].startswith("AIMASS_S3_"):
            assert "value" not in variable
            assert variable["valueFrom"]["secretKeyRef"]["name"] == "aimass-minio-credentials"
    volumes = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "auth-token", "secret": {"secretName": "aimass-serving-token", "defaultMode": 0o400,
                                              "items": [{"key": "token", "path": "token"}]}} in volumes
    assert "--set=serving.token_file=/var/run/secrets/aimass/token" in container["args"]


def test_the_service_name_is_the_endpoint_the_helm_backend_smoke_tests():
    for release in ("aimass-serving", "prod"):
        service = by_kind(render_chart(CPU_VALUES, release=release), "Service")
        assert service["metadata"]["name"] == chart_fullname(release)


def test_the_chart_runs_the_image_the_pipeline_uses():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    repository, tag = PROJECT_IMAGE.rsplit(":", 1)
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"] == repository
    assert chart["appVersion"] == tag
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"] == tag
    assert server_container(render_chart(CPU_VALUES))["image"] == PROJECT_IMAGE


def test_notes_tell_how_to_call_the_endpoint():
    finished = run_tool("helm", "install", "--dry-run=client", "aimass-serving", str(CHART), "--namespace",
                        "aimass-serving", "-f", str(CPU_VALUES))
    assert finished.returncode == 0, finished.stderr
    notes = finished.stdout.split("NOTES:", 1)[1]
    assert "http://aimass-serving.aimass-serving.svc:8080/v2/models/fashion-mnist/infer" in notes
    assert "port-forward svc/aimass-serving" in notes and "get secret aimass-serving-token" in notes


# ---- values.schema.json ----

@pytest.mark.parametrize("setting, message", [
    ("model.storageUri=", r"at '/model/storageUri': '' does not match pattern"),
    ("model.storageUri=https://example.com/model.pt", r"at '/model/storageUri': .* does not match pattern"),
    ("model.sha256=abc", r"at '/model/sha256': 'abc' does not match pattern"),
    ("model.version=latest", r"at '/model/version': 'latest' does not match pattern"),
    ("replicaCount=-2", r"at '/replicaCount': minimum: got -2, want 1"),
    ("autoscaling.maxReplicas=0", r"at '/autoscaling/maxReplicas': minimum: got 0, want 1"),
    ("replicas=3", r"additional properties 'replicas' not allowed"),
    ("model.uri=s3://b/m", r"at '/model': additional properties 'uri' not allowed"),
    ("gpu.enabled=yes", r"at '/gpu/enabled': got string, want boolean"),
    ("storage.endpoint=http://minio:9000", r"at '/storage/endpoint': .* does not match pattern"),
])
def test_the_values_schema_rejects_bad_values_naming_the_key(setting, message):
    flag = "--set-string" if setting.startswith("gpu.enabled=") else "--set"
    finished = run_tool("helm", "template", "aimass-serving", str(CHART), "-f", str(CPU_VALUES), flag, setting)
    assert finished.returncode != 0
    assert re.search(message, finished.stderr), finished.stderr


def test_the_default_values_alone_are_refused_until_a_model_is_given():
    finished = run_tool("helm", "template", "aimass-serving", str(CHART))
    assert finished.returncode != 0
    for key in ("version", "storageUri", "sha256"):
        assert f"at '/model/{key}'" in finished.stderr


# ---- capture and the monitor CronJob ----

def parsed_command(args: list[str]):
    """The configuration an `aimass` command line in the chart resolves to, through the real parser."""
    from aimass.cli import build_parser
    from aimass.cli.cluster import cluster_config
    from aimass.cli.options import config_from_args

    parsed = build_parser().parse_args(args)
    return parsed, (cluster_config(parsed) if getattr(parsed, "cluster", False) else config_from_args(parsed))


def test_every_pod_captures_a_tenth_of_its_requests_into_a_bucket_named_after_the_release():
    _, config = parsed_command(server_container(render_chart(CPU_VALUES, release="prod"))["args"])
    assert config.serving.capture.sample_rate == 0.1
    assert config.serving.capture.uri == "s3://aimass-capture/prod"


def test_the_monitor_cronjob_runs_aimass_monitor_retrain_on_the_cluster_as_the_monitor_account():
    objects = render_chart(CPU_VALUES, MONITORING_VALUES)
    cronjob = by_kind(objects, "CronJob")
    assert cronjob["spec"]["schedule"] == "*/30 * * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aimass-monitor"
    parsed, config = parsed_command(pod["containers"][0]["args"])
    assert (parsed.handler.__name__, parsed.retrain, parsed.cluster) == ("_monitor", True, True)
    assert config.serving.capture.uri == server_config_capture_uri(objects)
    assert (config.registry.backend, config.release.backend) == ("s3", "helm")
    assert config.registry.model_name == "fashion-mnist"
    for variable in pod["containers"][0]["env"]:
        if variable["name"].startswith("AIMASS_S3_"):
            assert "value" not in variable and variable["valueFrom"]["secretKeyRef"]["name"] == \
                "aimass-minio-credentials"


def server_config_capture_uri(objects) -> str:
    return parsed_command(server_container(objects)["args"])[1].serving.capture.uri


def test_the_monitor_pods_are_not_selected_by_the_servers_network_policy_or_service():
    objects = render_chart(CPU_VALUES, MONITORING_VALUES)
    labels = by_kind(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    selectors = [item["spec"]["selector"] for item in objects if item["kind"] == "Service"]
    selectors += [item["spec"]["podSelector"]["matchLabels"] for item in objects if item["kind"] == "NetworkPolicy"]
    matching = [selector for selector in selectors if selector.items() <= labels.items()]
    assert len(matching) == 1  # the monitor's own policy, which lets it reach DNS, the store and the KFP API
    (own,) = [item for item in objects if item["kind"] == "NetworkPolicy" and item["spec"]["podSelector"][
        "matchLabels"] == matching[0]]
    assert "ingress" not in own["spec"] and len(own["spec"]["egress"]) == 3


def test_without_monitor_enabled_no_cronjob_is_rendered():
    assert not [item for item in render_chart(CPU_VALUES) if item["kind"] == "CronJob"]


def test_with_every_monitoring_feature_on_nothing_rendered_holds_a_secret_value():
    objects = render_chart(CPU_VALUES, MONITORING_VALUES)
    assert {"ConfigMap", "PrometheusRule", "ServiceMonitor", "CronJob"} <= {item["kind"] for item in objects}
    assert not [item for item in objects if item["kind"] == "Secret"]
    containers = [container for _, spec in pod_specs(objects) for container in spec["containers"]]
    sensitive = [variable for container in containers for variable in container.get("env", [])
                 if any(word in variable["name"] for word in ("KEY", "SECRET", "TOKEN", "PASSWORD"))]
    assert sensitive and all("value" not in variable for variable in sensitive)
    config_data = " ".join(str(item.get("data")) for item in objects if item["kind"] == "ConfigMap").lower()
    assert not any(word in config_data for word in ("accesskey", "secretkey", "password", "bearer "))
