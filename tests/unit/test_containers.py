"""How `aimass run --runner docker` sets up each step's container, without an engine (tests/e2e runs them)."""
import os

import pytest

from aimass.config import load_config
from aimass.containers import ContainerEngineError, container_engine, step_container

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="run as another user, the containers run as that user")


@pytest.fixture
def repo(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir(mode=0o755)
    return folder


def test_the_repository_is_mounted_read_only_and_the_state_folders_read_write(repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    container = step_container(config, tmp_path / "runs")
    mounts = {mount.source: mount.read_only for mount in container.mounts}
    assert mounts[repo] is True
    for state in ("model-registry", "releases", "serving-cache", ".aimass-cache", ".dvc/tmp"):
        assert mounts[repo / state] is False


def test_compiled_kernels_outlive_each_container_in_a_mounted_cache(repo, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    container = step_container(load_config("tiny", [f"data.repo_dir={repo}"]), tmp_path / "runs")
    cache = repo / ".aimass-cache" / "inductor"
    assert container.environment["TORCHINDUCTOR_CACHE_DIR"] == str(cache)
    assert {mount.source: mount.read_only for mount in container.mounts}[cache] is False


def test_a_hugging_face_checkpoint_folder_is_mounted_read_only(repo, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir(mode=0o755)
    config = load_config("tiny", [f"data.repo_dir={repo}", f"model.architecture=hf:{checkpoint}"])
    assert {mount.source: mount.read_only for mount in step_container(config, tmp_path / "runs").mounts}[
        checkpoint] is True


@as_root
def test_run_as_root_the_steps_run_as_the_image_user_who_is_given_the_state_folders(repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    (repo / "model-registry" / "v1").mkdir(parents=True)
    container = step_container(config, tmp_path / "runs")
    assert container.user == "10001:10001"
    assert (repo / "model-registry" / "v1").stat().st_uid == 10001
    assert (tmp_path / "runs").stat().st_uid == 10001
    assert repo.stat().st_uid == 0  # the code and data stay the user's


def test_every_container_is_restricted_as_the_pods_are(repo, tmp_path):
    config = load_config("tiny", [f"data.repo_dir={repo}"])
    arguments = step_container(config, tmp_path / "runs").run_arguments({}, {"TOKEN": "x"})
    assert arguments["read_only"] is True and arguments["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in arguments["security_opt"] and "/tmp" in arguments["tmpfs"]
    assert arguments["environment"]["TOKEN"] == "x"


@as_root
def test_a_repository_the_image_user_cannot_read_is_refused_with_the_fix(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    config = load_config("tiny", [f"data.repo_dir={private}"])
    with pytest.raises(ContainerEngineError, match=r"cannot read .*private.*chmod o\+rx"):
        step_container(config, tmp_path / "runs")


def test_without_any_engine_the_run_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, no docker
    monkeypatch.setattr("aimass.containers.DOCKER_SOCKET", tmp_path / "no-docker.sock")
    with pytest.raises(ContainerEngineError, match="podman .*apt-get install -y podman runc"):
        with container_engine():
            pass
