"""What aimass ships to Kubernetes, against a real API server on loopback (etcd + kube-apiserver v1.36, started once
for the session by scripts/kube_apiserver.py): the manifests applied server-side, the service accounts' rights as
RBAC decides them (SubjectAccessReviews), Pod Security "restricted" as the PodSecurity admission plugin enforces it, the chart installed,
upgraded and rolled back by the real helm through the Helm release backend, and the train step's PyTorchJob.

There is no kubelet, scheduler or controller manager: objects are admitted, validated and stored, pods never run.
So helm installs without waiting for ready pods (release.wait_for_ready=false), and the `default` service account
the controller manager would create in a namespace is created by the fixture. The CRDs of the Prometheus Operator
and the training operator are stand-ins with open schemas (tests/fixtures/crds/README.md): their kinds are admitted
and authorised, their fields are checked statically by test_chart.py and test_training_job.py.
"""
import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from k8s_render import CPU_VALUES, MONITORING_VALUES, REPO_ROOT, render_chart, tool

from aimass.cli import main as aimass_main
from aimass.config import load_config
from aimass.registry import open_registry
from aimass.training.operator_job import pytorch_job

MANIFESTS = REPO_ROOT / "manifests"
STAND_IN_CRDS = REPO_ROOT / "tests" / "fixtures" / "crds" / "stand-in-crds.yaml"
SERVING = "aimass-serving"
PIPELINES = "kubeflow"  # where standalone Kubeflow Pipelines runs pipelines (manifests/ binds the accounts there)
PIPELINE_ACCOUNT = f"system:serviceaccount:{PIPELINES}:aimass-pipeline"
MONITOR_ACCOUNT = f"system:serviceaccount:{SERVING}:aimass-monitor"

# (verb, resource, namespace): what each account's work needs (allowed) and what it must never get (denied).
# None as the namespace asks cluster-wide.
RIGHTS = {
    PIPELINE_ACCOUNT: {
        "allowed": [  # the deploy step's helm in the serving namespace, the train step's PyTorchJob
            ("create", "secrets", SERVING), ("list", "secrets", SERVING), ("delete", "secrets", SERVING),
            ("create", "deployments.apps", SERVING), ("patch", "services", SERVING),
            ("create", "configmaps", SERVING), ("create", "horizontalpodautoscalers.autoscaling", SERVING),
            ("create", "networkpolicies.networking.k8s.io", SERVING), ("create", "cronjobs.batch", SERVING),
            ("create", "servicemonitors.monitoring.coreos.com", SERVING),
            ("create", "prometheusrules.monitoring.coreos.com", SERVING), ("watch", "pods", SERVING),
            ("create", "pytorchjobs.kubeflow.org", PIPELINES), ("watch", "pytorchjobs.kubeflow.org", PIPELINES),
        ],
        "denied": [
            ("get", "secrets", "kube-system"), ("list", "secrets", None), ("get", "secrets", PIPELINES),
            ("deletecollection", "secrets", SERVING), ("create", "pods/exec", SERVING),
            ("create", "pods", SERVING), ("create", "roles.rbac.authorization.k8s.io", SERVING),
            ("create", "rolebindings.rbac.authorization.k8s.io", SERVING),
            ("create", "clusterroles.rbac.authorization.k8s.io", None), ("create", "namespaces", None),
            ("create", "deployments.apps", "default"), ("create", "pytorchjobs.kubeflow.org", "default"),
            ("delete", "nodes", None),
        ],
    },
    MONITOR_ACCOUNT: {
        "allowed": [("create", "runs.pipelines.kubeflow.org", PIPELINES),
                    ("get", "experiments.pipelines.kubeflow.org", PIPELINES)],
        "denied": [("get", "secrets", SERVING), ("list", "secrets", PIPELINES), ("create", "pods", SERVING),
                   ("delete", "runs.pipelines.kubeflow.org", PIPELINES), ("create", "deployments.apps", SERVING)],
    },
}


@pytest.fixture(scope="module")
def cluster(kube_apiserver):
    """The API server with what a cluster running aimass has before any release: Kubeflow's namespace, the stand-in
    CRDs and `kubectl apply --server-side -k manifests/`."""
    kube_apiserver.kubectl("create", "namespace", PIPELINES)
    kube_apiserver.kubectl("apply", "--server-side", "-f", str(STAND_IN_CRDS))
    kube_apiserver.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(STAND_IN_CRDS))
    kube_apiserver.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
    # The controller manager would create it; pods that name no account run as it.
    kube_apiserver.kubectl("create", "serviceaccount", "default", "-n", SERVING)
    return kube_apiserver


def can(cluster, account: str, verb: str, resource: str, namespace: str | None) -> bool:
    """RBAC's answer for a service account, from a SubjectAccessReview: what `kubectl auth can-i` asks, and what
    Kubeflow Pipelines asks before it creates a run. `resource` is RESOURCE[/SUBRESOURCE][.GROUP]."""
    name, _, group = resource.partition(".")
    name, _, subresource = name.partition("/")
    account_namespace = account.split(":")[2]
    attributes = {"verb": verb, "group": group, "resource": name, "subresource": subresource}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": account, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account_namespace}",
                                    "system:authenticated"],
        "resourceAttributes": {**attributes, **({"namespace": namespace} if namespace else {})}}}
    answer = cluster.kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(review))
    return json.loads(answer.stdout)["status"].get("allowed", False)


def rights_gone_wrong(cluster, account: str) -> list[str]:
    """Every right the account lacks but needs, or holds but must not, as RBAC on the server decides."""
    expected = RIGHTS[account]
    where = lambda namespace: f"in {namespace}" if namespace else "cluster-wide"  # noqa: E731
    return ([f"{account} cannot {verb} {resource} {where(namespace)}, which its work needs"
             for verb, resource, namespace in expected["allowed"] if not can(cluster, account, verb, resource,
                                                                             namespace)] +
            [f"{account} may {verb} {resource} {where(namespace)}, which it must not"
             for verb, resource, namespace in expected["denied"] if can(cluster, account, verb, resource, namespace)])


def server_pod(objects: list[dict], kind: str = "Deployment") -> dict:
    """The pod template of the first `kind` object, as a Pod of the serving namespace."""
    workload = next(item for item in objects if item["kind"] == kind)
    template = workload["spec"]["template"] if kind == "Deployment" else \
        workload["spec"]["jobTemplate"]["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"probe-{uuid.uuid4().hex[:8]}", "namespace": SERVING,
                         "labels": template["metadata"].get("labels", {})},
            "spec": copy.deepcopy(template["spec"])}


def create_dry_run(cluster, manifest: dict, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
    """The server's whole admission chain for `manifest`, without storing it."""
    return cluster.kubectl("create", "--dry-run=server", "-f", "-", kubeconfig=kubeconfig, check=False,
                           stdin=json.dumps(manifest))


# ---- the manifests ----

def test_every_kustomization_is_admitted_server_side(cluster):
    cluster.kubectl("create", "namespace", "kubeflow-user-example-com")
    overlay = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-k",
                              str(MANIFESTS / "overlays" / "kubeflow-multi-user"), check=False)
    assert overlay.returncode == 0, overlay.stderr
    applied = json.loads(cluster.kubectl("get", "roles,rolebindings,networkpolicies", "-n", SERVING, "-o",
                                         "json").stdout)
    names = {(item["kind"], item["metadata"]["name"]) for item in applied["items"]}
    assert {("Role", "aimass-release-manager"), ("RoleBinding", "aimass-pipeline-release-manager"),
            ("NetworkPolicy", "default-deny-all")} <= names


def test_the_serving_namespace_enforces_pod_security_restricted(cluster):
    labels = json.loads(cluster.kubectl("get", "namespace", SERVING, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("account", RIGHTS, ids=["pipeline", "monitor"])
def test_each_service_account_holds_the_rights_its_work_needs_and_no_others(cluster, account):
    assert rights_gone_wrong(cluster, account) == []


def test_a_role_that_grants_every_verb_on_secrets_is_caught(cluster):
    """The same check as above, shown failing: the release manager's Role broadened to `*` on Secrets."""
    role_file = MANIFESTS / "base" / "release-manager-rbac.yaml"
    role, binding = yaml.safe_load_all(role_file.read_text())
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]})
    try:
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(role))
        assert (f"{PIPELINE_ACCOUNT} may deletecollection secrets in {SERVING}, which it must not"
                in rights_gone_wrong(cluster, PIPELINE_ACCOUNT))
    finally:
        cluster.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
    assert rights_gone_wrong(cluster, PIPELINE_ACCOUNT) == []


# ---- Pod Security ----

def test_the_charts_server_pod_and_monitor_pod_are_admitted_in_the_restricted_namespace(cluster):
    # A release name of its own: its service account must not stand in the way of the releases helm installs below.
    objects = render_chart(CPU_VALUES, MONITORING_VALUES, release="aimass-pod-check")
    for account in [item for item in objects if item["kind"] == "ServiceAccount"]:
        cluster.kubectl("apply", "--server-side", "-n", SERVING, "-f", "-", stdin=json.dumps(account))
    for kind in ("Deployment", "CronJob"):
        admitted = create_dry_run(cluster, server_pod(objects, kind))
        assert admitted.returncode == 0, admitted.stderr
        assert "Warning" not in admitted.stderr, admitted.stderr


def test_a_privileged_server_pod_is_refused_with_the_servers_own_message(cluster):
    pod = server_pod(render_chart(CPU_VALUES))
    pod["spec"]["serviceAccountName"] = "default"
    pod["spec"]["containers"][0]["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    refused = create_dry_run(cluster, pod)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest": privileged (container "model-server" must not set ' \
           'securityContext.privileged=true)' in refused.stderr


def test_a_pod_that_may_run_as_root_is_refused_naming_each_missing_setting(cluster):
    refused = create_dry_run(cluster, {"apiVersion": "v1", "kind": "Pod",
                                       "metadata": {"name": "as-root", "namespace": SERVING},
                                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert refused.returncode != 0
    for missing in ("allowPrivilegeEscalation != false", "runAsNonRoot != true", "unrestricted capabilities",
                    "seccompProfile"):
        assert missing in refused.stderr


# ---- the chart through helm, as the pipeline's account ----

@pytest.fixture(scope="module")
def pipeline_kubeconfig(cluster):
    """What the deploy step's helm runs as: a TokenRequest token of the aimass-pipeline service account."""
    return cluster.kubeconfig_for("aimass-pipeline", PIPELINES)


def helm(kubeconfig: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("helm")), "--kubeconfig", str(kubeconfig), "--namespace", SERVING, *arguments],
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_chart_with_every_optional_feature_installs_as_the_pipeline_account(cluster, pipeline_kubeconfig):
    installed = helm(pipeline_kubeconfig, "upgrade", "--install", "aimass-everything", str(REPO_ROOT / "helm" /
                     "aimass-serving"), "-f", str(CPU_VALUES), "-f", str(MONITORING_VALUES),
                     "--set", "autoscaling.enabled=false", "--set", "replicaCount=2")
    assert installed.returncode == 0, installed.stderr
    stored = json.loads(cluster.kubectl(
        "get", "deployments,services,configmaps,networkpolicies,poddisruptionbudgets,cronjobs,servicemonitors,"
        "prometheusrules,serviceaccounts", "-n", SERVING, "-l", "app.kubernetes.io/instance=aimass-everything",
        "-o", "json").stdout)["items"]
    kinds = {item["kind"] for item in stored}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "CronJob", "ServiceMonitor",
            "PrometheusRule", "ServiceAccount"} <= kinds
    autoscaled = helm(pipeline_kubeconfig, "upgrade", "aimass-everything", str(REPO_ROOT / "helm" / "aimass-serving"),
                      "-f", str(CPU_VALUES), "-f", str(MONITORING_VALUES))
    assert autoscaled.returncode == 0, autoscaled.stderr
    autoscalers = json.loads(cluster.kubectl("get", "horizontalpodautoscalers", "-n", SERVING, "-l",
                                             "app.kubernetes.io/instance=aimass-everything", "-o", "json").stdout)
    assert [item["spec"]["scaleTargetRef"]["kind"] for item in autoscalers["items"]] == ["Deployment"]


@pytest.fixture
def helm_release(cluster, pipeline_kubeconfig, tmp_path, monkeypatch, tiny_teacher):
    """`aimass release` settings for the Helm backend against the API server, as the pipeline's account, with a
    registry on a real S3 endpoint (moto) holding two versions."""
    from conftest import moto_s3_server

    monkeypatch.setenv("KUBECONFIG", str(pipeline_kubeconfig))
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    with moto_s3_server() as endpoint:
        settings = [f"data.repo_dir={tmp_path}", "registry.backend=s3", f"registry.s3_endpoint={endpoint}",
                    "registry.s3_secure=false", f"registry.s3_bucket=models-{uuid.uuid4().hex[:8]}",
                    "registry.model_name=fashion-mnist", "release.backend=helm",
                    f"release.helm_binary={tool('helm')}", f"release.namespace={SERVING}",
                    "release.name=aimass-serving", "release.wait_for_ready=false"]
        registry = open_registry(load_config("tiny", settings))
        registry.push(tiny_teacher[0])
        registry.push(tiny_teacher[0])
        yield [part for setting in settings for part in ("--set", setting)]


def release_command(settings: list[str], capsys, *arguments: str) -> str:
    assert aimass_main(["release", *arguments, "--profile", "tiny", *settings]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_helm_backend_deploys_rolls_back_and_reports_helms_own_revisions(cluster, helm_release, capsys):
    release_command(helm_release, capsys, "deploy", "v1", "--triggered-by", "alice@laptop")
    release_command(helm_release, capsys, "deploy", "v2", "--triggered-by", "bob@laptop")
    rolled_back = release_command(helm_release, capsys, "rollback")
    assert rolled_back.startswith("revision 3: fashion-mnist v1 (deployed, Rollback to 1")
    status = release_command(helm_release, capsys, "status")
    assert status.startswith("revision 3: fashion-mnist v1 (deployed")
    history = release_command(helm_release, capsys, "history")
    for line in ("alice@laptop", "bob@laptop", "Rollback to 1", "superseded"):
        assert line in history
    helm_secrets = json.loads(cluster.kubectl("get", "secrets", "-n", SERVING, "-l", "owner=helm,name=aimass-serving",
                                              "-o", "json").stdout)["items"]
    assert sorted(secret["metadata"]["labels"]["version"] for secret in helm_secrets) == ["1", "2", "3"]
    deployment = json.loads(cluster.kubectl("get", "deployment", "aimass-serving", "-n", SERVING, "-o",
                                            "json").stdout)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["aimass.io/model-version"] == "v1"


# ---- the train step's PyTorchJob ----

def test_the_train_steps_pytorchjob_is_admitted_for_the_pipeline_account(cluster, pipeline_kubeconfig):
    config = load_config("full", ["train.nodes=2", "train.nproc=2"])
    manifest = pytorch_job(config, "aimass-train-run-1", PIPELINES, "ghcr.io/aimass/aimass:0.1.0",
                           "/shared/aimass-train-run-1/job.json", "aimass-pipeline")
    admitted = create_dry_run(cluster, manifest, kubeconfig=pipeline_kubeconfig)
    assert admitted.returncode == 0, admitted.stderr
    elsewhere = create_dry_run(cluster, {**manifest, "metadata": {**manifest["metadata"], "namespace": "default"}},
                               kubeconfig=pipeline_kubeconfig)
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr


# ---- the fixture itself ----

def test_a_stopped_api_server_leaves_nothing_running(kube_apiserver, tmp_path):
    from kube_apiserver import running_apiserver

    with running_apiserver(tmp_path / "k8s", kube_apiserver.kubectl_binary) as server:
        processes = list(server.processes.values())
        assert server.kubectl("get", "--raw", "/readyz").stdout == "ok"
        assert all(process.poll() is None for process in processes)
    assert all(process.poll() is not None for process in processes)
