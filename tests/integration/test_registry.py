"""The model registry against both backends: a local folder, and a real S3 endpoint (moto's server on 127.0.0.1)
spoken to with the real minio client."""
import uuid

import pytest
from conftest import free_port

from aimass.errors import ArtifactIntegrityError
from aimass.integrity import sha256_file
from aimass.object_store import LocalStore, ObjectStoreError, S3Store, validate_key
from aimass.registry import ModelRegistry, RegistryError

MODEL = "fashion-mnist-classifier"


def s3_store(endpoint: str) -> S3Store:
    # moto keeps its buckets in process-wide memory across server instances: one fresh bucket per test.
    bucket = f"aimass-models-{uuid.uuid4().hex[:12]}"
    store = S3Store(endpoint, bucket, secure=False, access_key="test-access", secret_key="test-secret")
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "registry")
    return s3_store(request.getfixturevalue("s3_server"))


@pytest.fixture
def registry(store):
    return ModelRegistry(store, MODEL)


def test_a_pushed_model_pulls_back_byte_for_byte(registry, tiny_teacher, tmp_path):
    record = registry.push(tiny_teacher[0], metrics={"accuracy": 0.75})
    registry.pull(record.version, tmp_path / "pulled")
    for name in ("model.safetensors", "model.json", "manifest.json"):
        assert (tmp_path / "pulled" / name).read_bytes() == (tiny_teacher[0] / name).read_bytes()


def test_a_version_records_lineage_metrics_sha256_and_creation_time(registry, tiny_teacher):
    record = registry.push(tiny_teacher[0], metrics={"accuracy": 0.75}, parent_version=None)
    assert record.lineage["data_md5"].endswith(".dir") and record.metrics == {"accuracy": 0.75}
    assert record.files["model.safetensors"] == sha256_file(tiny_teacher[0] / "model.safetensors")
    assert record.created_at.endswith("+00:00")
    assert registry.get(record.version) == record


def test_versions_are_numbered_and_never_overwritten(registry, tiny_teacher):
    first = registry.push(tiny_teacher[0])
    second = registry.push(tiny_teacher[0], parent_version=first.version)
    assert (first.version, second.version) == ("v1", "v2")
    assert [v.version for v in registry.versions()] == ["v1", "v2"] and second.parent_version == "v1"


def test_aliases_move_between_versions(registry, tiny_teacher):
    registry.push(tiny_teacher[0])
    registry.push(tiny_teacher[0])
    registry.promote("v1", "production")
    registry.promote("v2", "production")
    assert registry.resolve("production") == "v2" and registry.aliases() == {"production": "v2"}


def test_a_tampered_object_is_refused_on_pull(registry, tiny_teacher, tmp_path):
    record = registry.push(tiny_teacher[0])
    key = f"models/{MODEL}/versions/{record.version}/files/model.safetensors"
    data = bytearray(registry.store.read(key))
    data[100] ^= 0x01
    registry.store.write(key, bytes(data))
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "previous.txt").write_text("still here")
    with pytest.raises(ArtifactIntegrityError, match="model.safetensors has sha256 .* refusing"):
        registry.pull(record.version, tmp_path / "serving")
    assert (tmp_path / "serving" / "previous.txt").read_text() == "still here"


def test_an_interrupted_upload_leaves_no_visible_version(registry, tiny_teacher):
    # What a crash after the files and before the record leaves behind:
    registry.store.upload(f"models/{MODEL}/versions/v1/files/model.safetensors",
                          tiny_teacher[0] / "model.safetensors")
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="has no version v1"):
        registry.get("v1")
    assert registry.push(tiny_teacher[0]).version == "v2"  # the half-written number is never reused


def test_a_corrupted_model_directory_is_not_pushed(registry, tiny_teacher, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_teacher[0], tmp_path / "broken")
    (broken / "model.json").write_text("{}")
    with pytest.raises(ArtifactIntegrityError):
        registry.push(broken)
    assert registry.versions() == []


def test_unknown_versions_and_aliases_are_named(registry):
    with pytest.raises(RegistryError, match="'staging' is neither a version"):
        registry.get("staging")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/key", "models/%2e%2e/x", "models/../x", "a//b",
                                 "models\\x", ""])
def test_keys_that_could_escape_the_store_are_rejected(key):
    with pytest.raises(ObjectStoreError, match="invalid object key"):
        validate_key(key)


def test_an_unreachable_object_store_fails_with_the_endpoint_named(tiny_teacher):
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens here
    with pytest.raises(ObjectStoreError, match=f"http://{endpoint} is unreachable"):
        S3Store(endpoint, "aimass-models", secure=False, access_key="a", secret_key="b").ensure_bucket()


def test_s3_credentials_come_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("AIMASS_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AIMASS_S3_SECRET_KEY", raising=False)
    with pytest.raises(ObjectStoreError, match="set AIMASS_S3_ACCESS_KEY and AIMASS_S3_SECRET_KEY"):
        S3Store("127.0.0.1:9000", "aimass-models", secure=False)


def test_a_store_stopped_mid_session_fails_push_with_a_clear_error(tiny_teacher):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    registry = ModelRegistry(s3_store(f"127.0.0.1:{port}"), MODEL)
    registry.push(tiny_teacher[0])
    server.stop()
    with pytest.raises(ObjectStoreError, match="is unreachable"):
        registry.push(tiny_teacher[0])


def test_release_status_answers_from_the_local_history_while_the_store_is_down(tiny_teacher, tmp_path, monkeypatch,
                                                                              capsys):
    from moto.server import ThreadedMotoServer

    from aimass.cli import main

    monkeypatch.setenv("AIMASS_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("AIMASS_S3_SECRET_KEY", "test-secret")
    port = free_port()
    store_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    store_server.start()
    settings = ["--repo", str(tmp_path), "--set", "registry.backend=s3", "--set", f"registry.s3_endpoint=127.0.0.1:{port}",
                "--set", "registry.s3_secure=false", "--set", f"registry.s3_bucket=models-{uuid.uuid4().hex[:12]}",
                "--set", "registry.model_name=fashion-mnist"]
    assert main(["models", "push", str(tiny_teacher[0]), *settings]) == 0
    assert main(["release", "deploy", "v1", "--triggered-by", "ci", *settings]) == 0
    store_server.stop()
    capsys.readouterr()
    assert main(["release", "status", *settings]) == 0
    status = capsys.readouterr().out
    assert status.startswith("revision 1: fashion-mnist v1 (deployed") and "data_md5 " in status
