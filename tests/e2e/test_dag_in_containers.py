"""The whole tiny DAG with every step in a container of the project image, through kfp.local's Docker runner."""
import contextlib
import json
import os

import docker
import pytest

from aimass.config import PROJECT_IMAGE, load_config
from aimass.containers import StepContainer
from aimass.pipelines.local_run import STEP_ORDER, StepLogs, StepWatcher, run_pipeline_locally
from aimass.registry import open_registry
from aimass.releases import open_release_backend
from conftest import copy_tree

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def containerised_run(engine, data_repo, tmp_path_factory):
    repo = copy_tree(data_repo, tmp_path_factory.mktemp("container-repo") / "repo")
    repo.chmod(0o755)  # as a checkout is; pytest makes its folders private to this user
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    result = run_pipeline_locally(config, tmp_path_factory.mktemp("container-runs"), "abc123", verbose=False,
                                  runner="docker")
    return repo, result


def test_every_step_runs_in_the_image_and_the_model_deploys(containerised_run):
    repo, result = containerised_run
    statuses = {step.name: step.status for step in result.steps}
    assert result.succeeded, {step.name: (step.status, step.last_error_line()) for step in result.steps}
    assert statuses == {**{name: "SUCCESS" for name in STEP_ORDER}, "reject-model": "not run"}
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    revision = open_release_backend(config, open_registry(config, "fashion-mnist")).status()
    smoke = result.artifact("deploy", "smoke_metrics")["metadata"]
    assert smoke["model_version"] == revision.model_version and smoke["smoke_test_accuracy"] >= 0.5


def test_the_steps_write_the_registry_and_releases_as_the_image_user_not_root(containerised_run):
    repo, _ = containerised_run
    owners = {path.stat().st_uid for folder in ("model-registry", "releases") for path in (repo / folder).rglob("*")}
    expected = 10001 if os.geteuid() == 0 else os.geteuid()
    assert owners == {expected}


def test_each_step_log_names_the_container_and_image_it_ran_in(containerised_run):
    _, result = containerised_run
    for step in result.steps:
        if step.status == "SUCCESS":
            assert f"of {PROJECT_IMAGE} as user " in step.log.read_text().splitlines()[0], step.name


def test_a_container_that_exits_non_zero_is_a_failed_step_however_fast_it_is_removed(engine, tmp_path):
    """kfp.local's own Docker handler takes a container it can no longer find for a success; aimass waits for the
    exit status of every container before removing it."""
    output_file = tmp_path / "task" / "executor_output.json"
    executor_input = json.dumps({"outputs": {"outputFile": str(output_file)}})
    finished = []
    watcher = StepWatcher()
    watcher.finished = finished.append
    logs = StepLogs(verbose=False, watcher=watcher, container=StepContainer(user="10001:10001", mounts=()))
    with contextlib.closing(docker.from_env()) as client:
        exit_status = logs.run_container(client, PROJECT_IMAGE, ["sh", "-c", "echo boom; exit 3", "--executor_input",
                                                                 executor_input], volumes={})
    assert exit_status == 3
    assert finished[0].status == "FAILURE"
    assert "boom" in finished[0].log.read_text()
