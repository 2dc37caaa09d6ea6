"""The DVC remote on S3: `aimass data push` from a repository that has the data, `aimass data pull` into a fresh
clone that only has data.dvc, through DVC's own S3 remote against a real S3 endpoint (moto) on 127.0.0.1."""
import hashlib
import shutil
import uuid

import pytest
from conftest import init_dvc_repo
from minio import Minio

from aimass.cli import main as aimass_main
from aimass.config import load_config
from aimass.data.versions import pin_data_version, pinned_data_md5, pull_data, push_data
from aimass.errors import DataVersionError


@pytest.fixture
def remote(s3_server, monkeypatch):
    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    bucket = f"dvc-{uuid.uuid4().hex[:12]}"
    Minio(s3_server, access_key="test-access", secret_key="test-secret", secure=False).make_bucket(bucket)
    return [f"data.remote_url=s3://{bucket}/fashion-mnist", f"data.remote_endpoint=http://{s3_server}"]


def fresh_clone(tmp_path, data_repo):
    """What a new checkout of the repository holds: git, DVC, data.dvc, and no data."""
    clone = init_dvc_repo(tmp_path / "clone")
    shutil.copyfile(data_repo / "data.dvc", clone / "data.dvc")
    return clone


def digests(folder):
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_pushed_data_version_pulls_byte_for_byte_into_a_fresh_clone(data_repo, remote, tmp_path):
    assert push_data(data_repo, load_config("tiny", remote).data) > 0
    clone = fresh_clone(tmp_path, data_repo)
    md5 = pull_data(clone, load_config("tiny", remote).data)
    assert md5 == pinned_data_md5(data_repo)
    assert digests(clone / "data") == digests(data_repo / "data")


def test_pushing_again_uploads_nothing(data_repo, remote):
    push_data(data_repo, load_config("tiny", remote).data)
    assert push_data(data_repo, load_config("tiny", remote).data) == 0


def test_a_version_never_pushed_is_refused_with_what_to_do(data_repo, remote, tmp_path):
    clone = fresh_clone(tmp_path, data_repo)
    with pytest.raises(DataVersionError, match=r"could not be pulled from s3://.*was it pushed\? `aimass data push`"):
        pull_data(clone, load_config("tiny", remote).data)
    assert not (clone / "data").exists()


def test_a_data_version_can_be_pinned_by_its_md5_alone(data_repo, remote, tmp_path):
    push_data(data_repo, load_config("tiny", remote).data)
    scratch = init_dvc_repo(tmp_path / "scratch")
    pin_data_version(scratch, pinned_data_md5(data_repo))
    pull_data(scratch, load_config("tiny", remote).data)
    assert digests(scratch / "data") == digests(data_repo / "data")


def test_a_malformed_md5_is_refused():
    with pytest.raises(DataVersionError, match="is not a DVC directory hash"):
        pin_data_version(None, "2cd2cf2f")


def test_without_a_remote_push_says_which_settings_to_give(data_repo):
    with pytest.raises(DataVersionError, match="set data.remote_url=s3://BUCKET/PATH"):
        push_data(data_repo, load_config("tiny").data)


def test_the_cli_pushes_and_pulls(data_repo, remote, tmp_path, capsys):
    settings = [part for setting in remote for part in ("--set", setting)]
    assert aimass_main(["data", "push", "--repo", str(data_repo), *settings]) == 0
    clone = fresh_clone(tmp_path, data_repo)
    assert aimass_main(["data", "pull", "--repo", str(clone), *settings]) == 0
    output = capsys.readouterr().out
    assert pinned_data_md5(data_repo) in output and "pulled" in output


def test_ingest_given_a_data_version_pulls_it_from_the_remote_as_a_pod_would(data_repo, remote, tmp_path):
    from aimass.ingestion.stage import ingest
    from aimass.data.arrays import load_image_sets

    push_data(data_repo, load_config("tiny", remote).data)
    nowhere = tmp_path / "no-repository"  # a pod has no clone: only the md5 and the remote
    config = load_config("tiny", [*remote, f"data.repo_dir={nowhere}"])
    pulled = ingest(config, tmp_path / "pulled", data_version=pinned_data_md5(data_repo))
    local = ingest(load_config("tiny", [f"data.repo_dir={data_repo}"]), tmp_path / "local")
    assert pulled == local
    for name in ("train", "validation", "test"):
        assert (load_image_sets(tmp_path / "pulled")[0][name].labels == load_image_sets(tmp_path / "local")[0][
            name].labels).all()
