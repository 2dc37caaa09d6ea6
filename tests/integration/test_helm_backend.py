"""The Helm release backend against a FAKE helm (tests/fakes/fake_helm.py): no cluster can run here, so a stand-in
records each command and keeps a history the way helm does, printing helm's own JSON. The registry behind it is a
real S3 endpoint (moto), and every upgrade is first rendered by the real helm binary against the real chart."""
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from aimass.cli import main as aimass_main
from aimass.config import PROJECT_IMAGE, load_config
from aimass.registry import manifest_sha256, open_registry
from aimass.releases import ReleaseError, open_release_backend
from aimass.releases.helm import HELM_ROLLBACK_NOTE, HelmError, HelmReleaseBackend, chart_fullname

FAKES = REPO_ROOT / "tests" / "fakes"
REAL_HELM = Path(sys.prefix) / "bin" / "helm"


class FakeHelm:
    def __init__(self, directory: Path, monkeypatch):
        self.state = directory / "state"
        self.executable = directory / "helm"
        self.executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / "fake_helm.py"}" "$@"\n')
        self.executable.chmod(0o755)
        monkeypatch.setenv("FAKE_HELM_STATE", str(self.state))
        monkeypatch.setenv("FAKE_HELM_REAL", str(REAL_HELM))

    def calls(self, command: str) -> list[list[str]]:
        lines = (self.state / "calls.jsonl").read_text().splitlines()
        return [argv for argv in map(json.loads, lines) if argv[0] == command]

    def fail_next_upgrade(self, message: str) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "fail-next-upgrade").write_text(message)

    def replay(self, recorded_history: Path, values_by_revision: dict[int, dict]) -> None:
        (self.state / "values").mkdir(parents=True)
        shutil.copyfile(recorded_history, self.state / "history.json")
        for revision, values in values_by_revision.items():
            (self.state / "values" / f"{revision}.json").write_text(json.dumps(values))


@pytest.fixture
def helm(tmp_path, monkeypatch):
    if not REAL_HELM.is_file():
        pytest.fail("helm is missing from the environment: run `make k8s-tools` (the test command does)")
    return FakeHelm(tmp_path, monkeypatch)


@pytest.fixture
def settings(tmp_path, s3_server, helm, monkeypatch):
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    return [f"data.repo_dir={tmp_path}", "registry.backend=s3", f"registry.s3_endpoint={s3_server}",
            "registry.s3_secure=false", f"registry.s3_bucket=models-{uuid.uuid4().hex[:8]}",
            "release.backend=helm", f"release.helm_binary={helm.executable}", "release.namespace=ml-serving",
            "registry.model_name=fashion-mnist-classifier"]


@pytest.fixture
def config(settings):
    return load_config("tiny", settings)


@pytest.fixture
def registry(config, tiny_teacher):
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    registry.push(tiny_teacher[0])
    return registry


def test_deploy_runs_helm_upgrade_install_waiting_and_rolling_back_on_failure_with_helm_4(config, registry, helm):
    open_release_backend(config, registry).deploy("v1", "alice@laptop")
    (upgrade,) = helm.calls("upgrade")
    assert upgrade[:4] == ["upgrade", "--install", "aimass-serving", str(REPO_ROOT / "helm" / "aimass-serving")]
    for flag in ("--wait=watcher", "--rollback-on-failure"):
        assert flag in upgrade
    for option, value in (("--history-max", "10"), ("--namespace", "ml-serving"), ("--timeout", "600s")):
        assert upgrade[upgrade.index(option) + 1] == value


def test_helm_3_gets_atomic_and_a_plain_wait(config, registry, helm, monkeypatch):
    monkeypatch.setenv("FAKE_HELM_VERSION", "v3.19.2")
    open_release_backend(config, registry).deploy("v1", "alice@laptop")
    (upgrade,) = helm.calls("upgrade")
    assert "--atomic" in upgrade and "--wait" in upgrade
    assert "--rollback-on-failure" not in upgrade and "--wait=watcher" not in upgrade


def test_without_waiting_for_ready_pods_helm_neither_waits_nor_rolls_back(config, registry, helm):
    no_wait = config.model_copy(update={"release": config.release.model_copy(update={"wait_for_ready": False})})
    open_release_backend(no_wait, registry).deploy("v1", "alice@laptop")
    (upgrade,) = helm.calls("upgrade")
    assert not [flag for flag in upgrade if flag.startswith(("--wait", "--rollback-on-failure", "--atomic"))]


def test_helm_2_is_refused_with_the_versions_that_work(config, registry, helm, monkeypatch):
    monkeypatch.setenv("FAKE_HELM_VERSION", "v2.17.0")
    with pytest.raises(ReleaseError, match="aimass needs Helm 3 or 4"):
        open_release_backend(config, registry).deploy("v1", "alice@laptop")


def test_a_revision_pins_the_model_by_storage_uri_and_manifest_sha256(config, registry, helm):
    backend = open_release_backend(config, registry)
    values = backend.model_values(registry.get("v2"), "pipeline run r-7")
    bucket = config.registry.s3_bucket
    assert values["model"] == {"name": "fashion-mnist-classifier", "version": "v2",
                               "storageUri": f"s3://{bucket}/models/fashion-mnist-classifier/versions/v2",
                               "sha256": manifest_sha256(registry.get("v2"))}
    assert values["lineage"] == {**registry.get("v2").lineage, "parent_version": "none"}
    assert values["triggeredBy"] == "pipeline run r-7"
    assert f"{values['image']['repository']}:{values['image']['tag']}" == PROJECT_IMAGE
    assert values["storage"] == {"endpoint": config.registry.s3_endpoint, "secure": False}


def test_the_pods_can_be_told_another_address_of_the_store_than_this_machine_uses(settings, registry, helm):
    config = load_config("tiny", [*settings, "release.storage_endpoint=minio.minio.svc.cluster.local:9000"])
    values = open_release_backend(config, registry).model_values(registry.get("v1"), "alice")
    assert values["storage"]["endpoint"] == "minio.minio.svc.cluster.local:9000"


def test_no_credential_reaches_helm_or_what_it_renders(config, registry, helm):
    open_release_backend(config, registry).deploy("v1", "alice@laptop")
    sent = [json.dumps(argv) for argv in helm.calls("upgrade")] + [(helm.state / "values" / "1.json").read_text(),
                                                                    (helm.state / "last-rendered.yaml").read_text()]
    for credential in ("test-access", "test-secret"):  # $AIMASS_S3_ACCESS_KEY / $AIMASS_S3_SECRET_KEY here
        assert not [text for text in sent if credential in text]
    assert "secretKeyRef" in sent[-1]


def test_the_model_values_win_over_site_values_files(settings, registry, helm, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("model: {version: v9}\nauth: {secretName: serving-token}\n")
    config = load_config("tiny", [*settings, f"release.values_files=[{site}]"])
    open_release_backend(config, registry).deploy("v1", "alice@laptop")
    (upgrade,) = helm.calls("upgrade")
    files = [upgrade[i + 1] for i, argument in enumerate(upgrade) if argument == "-f"]
    assert files[0] == str(site) and len(files) == 2
    assert open_release_backend(config, registry).status().model_version == "v1"


def test_history_joins_each_helm_revision_with_the_model_its_values_pinned(config, registry, helm):
    pinned = {n: {"model": {"name": "fashion-mnist-classifier", "version": f"v{n}"}, "lineage": {"run_id": f"r-{n}"},
                  "triggeredBy": f"pipeline run r-{n}"} for n in (1, 2, 3)}
    helm.replay(FAKES / "helm-history-with-rollback.json", {**pinned, 4: pinned[2]})
    history = open_release_backend(config, registry).history()
    assert [(r.revision, r.model_version, r.status) for r in history] == [
        (1, "v1", "superseded"), (2, "v2", "superseded"), (3, "v3", "failed"), (4, "v2", "deployed")]
    assert history[3].description == "Rollback to 2" and history[3].triggered_by == HELM_ROLLBACK_NOTE
    assert history[1].lineage == {"run_id": "r-2"} and history[1].triggered_by == "pipeline run r-2"
    assert history[0].updated_at == "2026-11-20T09:12:41.530917365Z"


def test_status_reads_the_values_of_the_deployed_revision_only(config, registry, helm):
    backend = open_release_backend(config, registry)
    for version in ("v1", "v2", "v1"):
        backend.deploy(version, "run")
    (helm.state / "calls.jsonl").write_text("")
    assert backend.status().revision == 3
    assert [call[:2] + call[3:5] for call in helm.calls("get")] == [["get", "values", "--revision", "3"]]


def test_a_release_helm_has_never_seen_has_no_history_and_no_status(config, registry, helm):
    backend = open_release_backend(config, registry)
    assert backend.history() == []
    with pytest.raises(ReleaseError, match="nothing is deployed yet"):
        backend.status()


def test_a_failed_upgrade_names_the_command_and_helms_words_and_the_previous_model_keeps_serving(
        config, registry, helm):
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "run 1")
    helm.fail_next_upgrade("context deadline exceeded")
    with pytest.raises(HelmError, match=r"`\S*helm upgrade --install aimass-serving .*` failed \(exit 1\): Error: "
                                        r"UPGRADE FAILED: .*context deadline exceeded; the previous revision keeps "
                                        r"serving"):
        backend.deploy("v2", "run 2")
    assert [(r.revision, r.status) for r in backend.history()] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert backend.status().model_version == "v1"


def test_values_the_chart_rejects_fail_the_deploy_before_anything_changes(config, registry, helm, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("replicaCount: -1\n")
    config = config.model_copy(update={"release": config.release.model_copy(update={"values_files": (str(bad),)})})
    with pytest.raises(HelmError, match="replicaCount.*minimum"):
        open_release_backend(config, registry).deploy("v1", "alice")
    assert open_release_backend(config, registry).history() == []


def test_rollback_runs_helm_rollback_to_the_revision_before_and_serves_its_model_again(config, registry, helm):
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "run 1")
    backend.deploy("v2", "run 2")
    revision = backend.rollback(None, "bob@laptop")
    (rollback,) = helm.calls("rollback")
    assert rollback[:3] == ["rollback", "aimass-serving", "1"] and "--wait=watcher" in rollback
    assert (revision.revision, revision.model_version, revision.description) == (3, "v1", "Rollback to 1")
    assert backend.status().model_version == "v1"


def test_rollback_to_a_revision_helm_no_longer_keeps_lists_the_ones_it_does(config, registry, helm):
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "run 1")
    with pytest.raises(ReleaseError, match=r"no revision 7 to roll back to; revisions helm keeps: 1"):
        backend.rollback(7, "bob")
    assert helm.calls("rollback") == []


def test_uninstall_keeps_the_history(config, registry, helm):
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "run 1")
    revision = backend.uninstall("deploy step")
    (uninstall,) = helm.calls("uninstall")
    assert "--keep-history" in uninstall
    assert (revision.status, revision.description) == ("uninstalled", "Uninstalled by deploy step")


def test_a_local_registry_cannot_back_a_cluster_release(tmp_path, tiny_teacher, helm):
    config = load_config("tiny", [f"data.repo_dir={tmp_path}", "release.backend=helm", "registry.model_name=m",
                                  f"release.helm_binary={helm.executable}"])
    registry = open_registry(config)
    registry.push(tiny_teacher[0])
    with pytest.raises(ReleaseError, match="set registry.backend=s3"):
        open_release_backend(config, registry).deploy("v1", "alice")


def test_a_missing_helm_binary_says_how_to_get_one(config, registry):
    config = config.model_copy(update={"release": config.release.model_copy(
        update={"helm_binary": "/nonexistent/helm"})})
    with pytest.raises(ReleaseError, match=r"'/nonexistent/helm' not found: install helm \(`make k8s-tools`"):
        open_release_backend(config, registry).deploy("v1", "alice")


def test_an_unknown_model_version_is_refused_before_helm_runs(config, registry, helm):
    with pytest.raises(Exception, match="has no version v9"):
        open_release_backend(config, registry).deploy("v9", "alice")
    assert not (helm.state / "calls.jsonl").exists() or helm.calls("upgrade") == []


def test_the_smoke_test_endpoint_is_the_service_the_chart_creates(config, registry):
    backend = open_release_backend(config, registry)
    assert isinstance(backend, HelmReleaseBackend)
    assert backend.endpoint_url == "http://aimass-serving.ml-serving.svc:8080"
    assert chart_fullname("prod") == "prod-aimass-serving"


def test_the_cli_deploys_rolls_back_and_shows_history_through_helm(settings, registry, helm, capsys):
    arguments = ["--profile", "tiny", *[part for s in settings for part in ("--set", s)]]
    assert aimass_main(["release", "deploy", "v1", *arguments]) == 0
    assert aimass_main(["release", "deploy", "v2", *arguments]) == 0
    assert aimass_main(["release", "rollback", *arguments]) == 0
    assert aimass_main(["release", "history", *arguments]) == 0
    output = capsys.readouterr().out
    assert "Rollback to 1" in output and "v2" in output


# ---- the pipeline's deploy step on the Helm backend ----

@pytest.fixture
def served_release(settings):
    """A model server following the Helm release (through the fake helm), standing in for the chart's pods."""
    from aimass.serving import ReleaseSource, running_server

    config = load_config("tiny", [*settings, "serving.poll_seconds=0.1"])
    with running_server(config.registry.model_name, ReleaseSource(config), config) as server:
        yield config.model_copy(update={"serving": config.serving.model_copy(update={"url": server.url})})


def test_the_deploy_step_releases_through_helm_and_smoke_tests_the_served_model(served_release, helm, tiny_teacher,
                                                                                tiny_splits_dir):
    from aimass.deployment.stage import deploy

    outcome = deploy(served_release, tiny_teacher[0], tiny_splits_dir, {"accuracy": 0.7}, "pipeline run r-1")
    assert (outcome.revision.revision, outcome.smoke.served_version) == (1, "v1")
    assert len(helm.calls("upgrade")) == 1 and not outcome.smoke.failed_requests


def test_a_deploy_step_whose_model_fails_the_smoke_test_runs_helm_rollback(served_release, helm, tiny_teacher,
                                                                           tiny_splits_dir):
    from aimass.deployment.stage import deploy
    from aimass.errors import DeployError

    from conftest import free_port

    deploy(served_release, tiny_teacher[0], tiny_splits_dir, {}, "run 1")
    nothing_answers = served_release.model_copy(update={"serving": served_release.serving.model_copy(update={
        "url": f"http://127.0.0.1:{free_port()}", "ready_timeout_seconds": 1})})
    with pytest.raises(DeployError, match="Rolled back to revision 1"):
        deploy(nothing_answers, tiny_teacher[0], tiny_splits_dir, {}, "run 2")
    assert helm.calls("rollback")[0][:3] == ["rollback", "aimass-serving", "1"]
    assert open_release_backend(served_release, open_registry(served_release)).status().model_version == "v1"


# ---- canaries: every step a revision, abort a rollback ----

def rendered(helm, kind):
    import yaml

    documents = yaml.safe_load_all((helm.state / "last-rendered.yaml").read_text())
    return next(document for document in documents if document and document["kind"] == kind)


def test_each_canary_step_is_a_helm_revision_whose_configmap_names_the_candidate_and_restarts_no_pod(
        config, registry, helm):
    from aimass.canary.controller import plan_canary, start_canary
    from aimass.canary.plan import StepResult

    backend = open_release_backend(config, registry)
    backend.deploy("v1", "alice@laptop")
    pod_template = rendered(helm, "Deployment")["spec"]["template"]
    state = plan_canary(backend, registry, "v2", config.release.canary, "alice@laptop")
    start_canary(backend, state)
    backend.record_canary(state.judged(StepResult(0, True, [], {})), "Canary v2 step 2/4 (weight 10%)", "alice")
    canary = json.loads(rendered(helm, "ConfigMap")["data"]["canary.json"])
    assert (canary["candidate_version"], canary["step"], canary["candidate_sha256"]) == \
        ("v2", 1, manifest_sha256(registry.get("v2")))
    assert rendered(helm, "Deployment")["spec"]["template"] == pod_template
    history = backend.history()
    assert [revision.description for revision in history[1:]] == ["Canary v2 started: step 1/4 (shadow)",
                                                                  "Canary v2 step 2/4 (weight 10%)"]
    assert history[-1].running_canary.weight == 10 and history[-1].model_version == "v1"


def test_an_aborted_canary_records_why_then_helm_rolls_back_to_the_revision_before_it(config, registry, helm):
    from aimass.canary.controller import plan_canary, start_canary
    from aimass.canary.plan import ABORTED

    backend = open_release_backend(config, registry)
    backend.deploy("v1", "alice@laptop")
    state = plan_canary(backend, registry, "v2", config.release.canary, "alice@laptop")
    start_canary(backend, state)
    backend.abort_canary(state.ended(ABORTED, "agreement 0.41 of 300 images (< 0.90)"), "alice@laptop")
    assert helm.calls("rollback")[-1][:3] == ["rollback", "aimass-serving", "1"]
    *_, aborted, rolled_back = backend.history()
    assert aborted.description == "Canary v2 aborted at step 1/4 (shadow): agreement 0.41 of 300 images (< 0.90)"
    assert rolled_back.description == "Rollback to 1" and rolled_back.running_canary is None
    assert backend.status().model_version == "v1"


def test_a_promoted_canary_is_a_deploy_of_the_candidate_with_its_analysis_in_the_lineage(config, registry, helm):
    from aimass.canary.controller import plan_canary, start_canary
    from aimass.canary.plan import StepResult

    backend = open_release_backend(config, registry)
    backend.deploy("v1", "alice@laptop")
    state = plan_canary(backend, registry, "v2", config.release.canary, "alice@laptop")
    start_canary(backend, state)
    check = {"name": "agreement", "summary": "0.970 of 400 images"}
    promoted = backend.promote_canary(state.judged(StepResult(0, True, [check], {})), "alice@laptop")
    assert promoted.model_version == "v2" and promoted.description == "Canary v2 promoted after 1 steps"
    assert "agreement 0.970 of 400 images" in promoted.lineage["canary_steps"]
    assert json.loads(rendered(helm, "ConfigMap")["data"]["canary.json"])["outcome"] == "promoted"
