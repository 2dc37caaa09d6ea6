"""sha256 manifests: every artifact directory aimass writes lists the digest of each file it holds.

Readers verify the manifest before trusting a byte, so a truncated copy or a flipped bit is refused with the file named
instead of silently feeding a model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from aimass.errors import ArtifactIntegrityError

MANIFEST_NAME = "manifest.json"
_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, metadata: dict) -> dict:
    """Write `manifest.json` holding `metadata` plus the sha256 of every other file in `directory`.

    Keys are sorted and no timestamp is added unless the caller puts one in `metadata`, so the same content always
    gives the same bytes (DVC hashes of imported data depend on it).
    """
    files = {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {**metadata, "sha256": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_verified_manifest(directory: Path) -> dict:
    """Return the manifest of `directory` after checking every listed file against its sha256.

    Raises:
        ArtifactIntegrityError: the manifest is missing, or a listed file is missing or differs.
    """
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactIntegrityError(f"{directory} has no {MANIFEST_NAME}: it was not written by aimass or is incomplete")
    manifest = json.loads(manifest_path.read_text())
    for relative_name, expected in manifest["sha256"].items():
        path = directory / relative_name
        if not path.is_file():
            raise ArtifactIntegrityError(f"{path} is listed in {manifest_path} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{path} is corrupted: sha256 {actual} differs from {expected} recorded in {manifest_path}; "
                "re-create the artifact instead of using it"
            )
    return manifest
