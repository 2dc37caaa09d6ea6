"""The deploy stage: push, release, smoke-test the served model over HTTP, and undo the release on failure."""
import pytest
from aimass.deployment.stage import PRODUCTION_ALIAS, deploy
from aimass.errors import DeployError
from aimass.gates import smoke_test_failures

from aimass.config import load_config
from aimass.errors import AimassError
from aimass.registry import open_registry
from aimass.releases import UNINSTALLED, ReleaseError, open_release_backend

GATE_METRICS = {"accuracy": 0.75, "macro_f1": 0.74, "corruption_accuracy": 0.61, "calibration_error": 0.05,
                "precision_Bag": 0.8}
DATASET = "fashion-mnist"  # the tiny splits' data set: the model is registered under its name


@pytest.fixture
def config(tmp_path):
    return load_config("tiny", [f"data.repo_dir={tmp_path}", "serving.poll_seconds=0.05"])


def unreachable(config):
    """The same configuration, smoke-testing an endpoint where nothing answers."""
    from conftest import free_port

    return config.model_copy(update={"serving": config.serving.model_copy(update={
        "url": f"http://127.0.0.1:{free_port()}", "ready_timeout_seconds": 1})})


def test_a_deploy_publishes_releases_and_smoke_tests_the_served_model(config, tiny_teacher, tiny_splits_dir):
    outcome = deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-1")
    registry = open_registry(config, DATASET)
    assert outcome.model_version == "v1" and registry.resolve(PRODUCTION_ALIAS) == "v1"
    assert registry.get("v1").metrics == GATE_METRICS
    assert outcome.smoke.served_version == "v1" and not outcome.smoke.failed_requests
    assert outcome.smoke.images == config.serving.smoke_test_images
    assert outcome.smoke.agreement == 1.0 and 0.5 < outcome.smoke.accuracy <= 1
    status = open_release_backend(config, registry).status()
    assert (status.revision, status.model_version, status.triggered_by) == (1, "v1", "pipeline run r-1")
    assert "Deployed fashion-mnist v1 as revision 1" in outcome.markdown()


def test_the_registered_model_card_keeps_the_test_figures_the_gate_judged(config, tiny_teacher, tiny_splits_dir,
                                                                             tmp_path):
    from aimass.models.card import read_model_card

    deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-1")
    open_registry(config, DATASET).pull("v1", tmp_path / "pulled")
    assert read_model_card(tmp_path / "pulled").evaluation == {"accuracy": 0.75, "macro_f1": 0.74,
                                                               "corruption_accuracy": 0.61, "calibration_error": 0.05}
    assert read_model_card(tiny_teacher[0]).evaluation is None  # the blessed artifact itself is left as it was


def test_the_served_models_metadata_shows_those_figures(config, tiny_teacher, tiny_splits_dir):
    import httpx

    from aimass.serving import ReleaseSource, running_server

    deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-1")
    with running_server(DATASET, ReleaseSource(config, DATASET), config) as server:
        parameters = httpx.get(f"{server.url}/v2/models/{DATASET}").json()["parameters"]
    assert parameters["evaluation"]["corruption_accuracy"] == 0.61
    assert parameters["evaluation"]["calibration_error"] == 0.05


def test_a_second_deploy_records_the_first_as_its_parent(config, tiny_teacher, tiny_splits_dir):
    deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 1")
    deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 2")
    assert open_registry(config, DATASET).get("v2").parent_version == "v1"


def test_a_failed_smoke_test_rolls_back_to_the_revision_that_served_before(config, tiny_teacher, tiny_splits_dir):
    deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 1")
    with pytest.raises(DeployError, match=r"v2 \(revision 2\) failed its smoke test: the served model could not be "
                                          r"checked: .* Rolled back to revision 1"):
        deploy(unreachable(config), tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 2")
    releases = open_release_backend(config, open_registry(config, DATASET))
    assert [(r.revision, r.model_version, r.description) for r in releases.history()][-1] == (3, "v1",
                                                                                            "Rollback to 1")
    assert releases.status().model_version == "v1"
    assert open_registry(config, DATASET).resolve(PRODUCTION_ALIAS) == "v1"


def test_a_failed_first_install_is_uninstalled(config, tiny_teacher, tiny_splits_dir):
    with pytest.raises(DeployError, match="first release, so the release was uninstalled"):
        deploy(unreachable(config), tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 1")
    releases = open_release_backend(config, open_registry(config, DATASET))
    assert releases.history()[-1].status == UNINSTALLED
    with pytest.raises(ReleaseError, match="nothing is deployed"):
        releases.status()


def test_an_endpoint_that_never_serves_the_new_version_fails_the_deploy(config, tiny_teacher, tiny_splits_dir):
    with pytest.raises(DeployError, match="did not serve v1 within 1 s"):
        deploy(unreachable(config), tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "run 1")


def test_a_served_model_that_answers_otherwise_than_the_blessed_one_fails_the_smoke_test():
    assert smoke_test_failures(images=200, agreement=0.6, failed_requests=[]) == [
        "the served model answers 200 held-out images as the blessed model does for only 60.00% (at least 99% "
        "expected): it is not the model that passed the gate"]


# ---- deploy.strategy ----

def with_strategy(config, strategy, *overrides):
    return load_config("tiny", [f"data.repo_dir={config.data.repo_dir}", "serving.poll_seconds=0.05",
                                f"deploy.strategy={strategy}", *overrides])


def test_strategy_none_registers_the_model_and_releases_nothing(config, tiny_teacher, tiny_splits_dir):
    config = with_strategy(config, "none")
    outcome = deploy(config, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-1")
    registry = open_registry(config, DATASET)
    assert outcome.revision is None and registry.get("v1").metrics == GATE_METRICS
    assert open_release_backend(config, registry).history() == []
    assert "aimass release canary v1" in outcome.markdown()


def test_strategy_canary_promotes_a_better_model_on_live_labelled_traffic_and_moves_the_alias(
        config, tiny_teacher, tiny_splits_dir, weaker_model_dir, fashion_mnist_test_images):
    from labelled_load import LabelledLoad

    from aimass.serving import ReleaseSource, running_server

    registry = open_registry(config, DATASET)
    registry.push(weaker_model_dir)
    open_release_backend(config, registry).deploy("v1", "test")
    images, labels = fashion_mnist_test_images
    with running_server(DATASET, ReleaseSource(config, DATASET), config) as server:
        canary = with_strategy(config, "canary", f"serving.url={server.url}", "release.canary.step_seconds=0.5",
                               "release.canary.min_requests=50", "release.canary.min_labelled=40")
        with LabelledLoad(server.url, DATASET, images[:1000], labels[:1000], server.holder.current.class_names):
            outcome = deploy(canary, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-2")
    assert outcome.revision.model_version == "v2" and registry.resolve(PRODUCTION_ALIAS) == "v2"
    assert outcome.revision.lineage["canary_from_revision"] == "1"
    assert outcome.revision.lineage["parent_version"] == "v1" and "promoted v2" in outcome.markdown()
    assert len(outcome.canary_lines) == 5 and outcome.canary_lines[-1].startswith("promoted v2")


def test_strategy_canary_without_a_live_server_changes_no_release(config, tiny_teacher, tiny_splits_dir):
    from conftest import free_port

    registry = open_registry(config, DATASET)
    registry.push(tiny_teacher[0])
    backend = open_release_backend(config, registry)
    backend.deploy("v1", "test")
    before = backend.history()
    canary = with_strategy(config, "canary", f"serving.url=http://127.0.0.1:{free_port()}")
    with pytest.raises(AimassError, match="cannot read the server's counters"):
        deploy(canary, tiny_teacher[0], tiny_splits_dir, GATE_METRICS, "pipeline run r-3")
    assert backend.history() == before and registry.get("v2")  # registered, for a canary by hand later
