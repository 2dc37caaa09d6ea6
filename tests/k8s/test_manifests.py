"""manifests/ as `kubectl apply -k` would send it (rendered by the real kubectl's kustomize), the secret templates,
and the Dockerfile the chart's pods run."""
import json
import re
import subprocess
import sys

import pytest
import yaml
from k8s_render import (
    CPU_VALUES,
    GPU_VALUES,
    KUBERNETES_VERSIONS,
    REPO_ROOT,
    kustomize,
    render_chart,
    restricted_violations,
    schema_errors,
)

MANIFESTS = REPO_ROOT / "manifests"
OVERLAYS = {"base": MANIFESTS, "kubeflow-multi-user": MANIFESTS / "overlays" / "kubeflow-multi-user"}
SECRET_TEMPLATES = sorted((MANIFESTS / "secret-templates").glob("*.yaml"))


def find(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schemas(overlay, kubernetes_version):
    assert schema_errors(kustomize(OVERLAYS[overlay]), kubernetes_version) == []


def test_the_schema_check_itself_catches_a_misspelt_field():
    deployment = next(item for item in render_chart(CPU_VALUES) if item["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert "readinesProbe" in " ".join(schema_errors([deployment], KUBERNETES_VERSIONS[-1]))


def test_the_restricted_check_itself_catches_a_root_container():
    pod = {"containers": [{"name": "root", "securityContext": {"runAsUser": 0}}]}
    assert "root: runAsNonRoot is not true" in restricted_violations(pod)


def test_the_serving_namespace_enforces_pod_security_restricted():
    labels = find(kustomize(MANIFESTS), "Namespace", "aimass-serving")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_the_serving_namespace_denies_all_traffic_the_chart_does_not_allow():
    policy = find(kustomize(MANIFESTS), "NetworkPolicy", "default-deny-all")
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_the_pipeline_service_account_is_bound_to_the_release_role_in_the_serving_namespace_only():
    objects = kustomize(MANIFESTS)
    binding = find(objects, "RoleBinding", "aimass-pipeline-release-manager")
    assert binding["metadata"]["namespace"] == "aimass-serving"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aimass-pipeline", "namespace": "kubeflow"}]
    assert not [item for item in objects if item["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_multi_user_overlay_binds_the_profile_namespace_service_account():
    binding = find(kustomize(OVERLAYS["kubeflow-multi-user"]), "RoleBinding", "aimass-pipeline-release-manager")
    assert binding["subjects"][0]["namespace"] == "kubeflow-user-example-com"


def test_the_release_role_has_no_wildcards_and_no_way_to_escalate():
    rules = find(kustomize(MANIFESTS), "Role", "aimass-release-manager")["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        assert not {"pods/exec", "roles", "rolebindings"} & set(rule["resources"])


def test_the_release_role_lets_helm_manage_every_kind_the_chart_renders():
    rules = find(kustomize(MANIFESTS), "Role", "aimass-release-manager")["rules"]
    allowed = {(group, resource): set(rule["verbs"])
               for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]}
    rendered = {(item["apiVersion"].rpartition("/")[0], item["kind"].lower() + "s")
                for values in (CPU_VALUES, GPU_VALUES) for item in render_chart(values)}
    rendered.add(("", "secrets"))  # Helm's own release records
    manage = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for group_and_resource in rendered:
        resource = group_and_resource[1].replace("policys", "policies")
        assert manage <= allowed.get((group_and_resource[0], resource), set()), group_and_resource


@pytest.mark.parametrize("template", SECRET_TEMPLATES, ids=lambda path: path.name)
def test_secret_templates_hold_placeholders_only_and_are_not_applied(template):
    secret = yaml.safe_load(template.read_text())
    assert schema_errors([secret], KUBERNETES_VERSIONS[-1]) == []
    assert all(value.startswith("REPLACE-WITH-") for value in secret["stringData"].values())
    assert not [item for item in kustomize(MANIFESTS) if item["kind"] == "Secret"]


def test_the_charts_secret_names_match_the_templates():
    names = {yaml.safe_load(path.read_text())["metadata"]["name"] for path in SECRET_TEMPLATES}
    values = yaml.safe_load(CPU_VALUES.read_text())
    defaults = yaml.safe_load((REPO_ROOT / "helm" / "aimass-serving" / "values.yaml").read_text())
    assert {defaults["storage"]["credentialsSecret"], values["auth"]["secretName"]} == names


# ---- the image ----

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def test_the_image_runs_as_the_unprivileged_user_the_chart_expects():
    (user,) = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    deployment = next(item for item in render_chart(CPU_VALUES) if item["kind"] == "Deployment")
    pod_context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}" and pod_context["runAsUser"] != 0


def test_the_image_builds_cpu_or_cuda_torch_and_installs_the_project_as_the_readme_does():
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", DOCKERFILE, re.MULTILINE)
    assert 'export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"' in DOCKERFILE
    # The pinned dependencies come from pyproject.toml itself, in a layer before the source; then the project.
    assert "tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']" in DOCKERFILE
    assert DOCKERFILE.index("pip install --quiet --no-compile -r") < DOCKERFILE.index("COPY aimass/") < \
        DOCKERFILE.index("--no-deps --no-build-isolation -e .")
    assert "-e '.[test]'" in (REPO_ROOT / "Makefile").read_text()  # the same editable install, plus test tools


def test_the_image_has_no_healthcheck_and_no_secrets():
    instructions = [line.split()[0] for line in DOCKERFILE.splitlines() if line and not line.startswith(("#", " "))]
    assert "HEALTHCHECK" not in instructions
    assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)\s*=", DOCKERFILE, re.IGNORECASE)


@pytest.mark.parametrize("script", ["e2e-kind.sh", "e2e-containers.sh", "build-image.sh", "build-base-image.sh"])
def test_the_container_scripts_parse(script):
    # e2e-kind.sh needs kind, which no machine here has; the others run in `make e2e`. Parsing is checked always.
    finished = subprocess.run(["bash", "-n", str(REPO_ROOT / "scripts" / script)], capture_output=True,
                              text=True, check=False)
    assert finished.returncode == 0, finished.stderr


def test_the_image_precompiles_every_dependency_package_aimass_imports():
    """The image keeps bytecode only for what scripts/precompile_imports.py imports; a package aimass imports
    beyond that would be compiled in memory by every step, every time."""
    program = """
import json, sys, sysconfig
sys.path.insert(0, "scripts")
import precompile_imports
site = sysconfig.get_paths()["purelib"]
def packages():
    return {name.split(".")[0] for name, module in list(sys.modules.items())
            if site in (getattr(module, "__file__", None) or "") and not name.startswith(("aimass", "__editable"))}
for name in precompile_imports.MODULES:
    __import__(name)
before = packages()
for name in precompile_imports.project_modules():
    __import__(name)
print(json.dumps(sorted(packages() - before)))
"""
    finished = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO_ROOT,
                              check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == []
