import pytest

from aimass.errors import ArtifactIntegrityError
from aimass.integrity import read_verified_manifest, write_manifest


def test_manifest_lists_the_sha256_of_every_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    manifest = write_manifest(tmp_path, {"kind": "test"})
    assert manifest["sha256"] == {"a.bin": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_a_flipped_byte_is_refused_naming_the_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 64)
    write_manifest(tmp_path, {})
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 63 + b"\x01")
    with pytest.raises(ArtifactIntegrityError, match="weights.bin is corrupted"):
        read_verified_manifest(tmp_path)


def test_a_missing_file_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    write_manifest(tmp_path, {})
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ArtifactIntegrityError, match="weights.bin is listed .* but missing"):
        read_verified_manifest(tmp_path)


def test_a_directory_without_manifest_is_refused(tmp_path):
    with pytest.raises(ArtifactIntegrityError, match="has no manifest.json"):
        read_verified_manifest(tmp_path)
