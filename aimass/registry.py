"""The model registry: immutable, numbered model versions with lineage and sha256s, plus movable aliases.

Layout in the object store (local folder or S3 bucket):
    models/<name>/versions/v<N>/files/<file>   the model directory's files, as uploaded
    models/<name>/versions/v<N>/version.json   the record: sha256 of every file, lineage, metrics, creation time
    models/<name>/aliases/<alias>.json         {"version": "v<N>"}: `production`, `staging`, ...

The record is written last, after every file: a version without it does not exist (an interrupted upload is never
listed or pulled, and its number is simply skipped). Every pull re-checks each file's sha256 against the record.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aimass.atomic import atomic_directory
from aimass.errors import AimassError, ArtifactIntegrityError
from aimass.integrity import MANIFEST_NAME, read_verified_manifest, sha256_file
from aimass.models.card import CARD_FILE, ModelCard
from aimass.config import AimassConfig
from aimass.data.card import model_name_for
from aimass.object_store import LocalStore, ObjectStore, S3Store, validate_key

RECORD_FILE = "version.json"
_VERSION = re.compile(r"^v(\d+)$")
# A version's storage URI, as Helm values and `aimass serve --model-uri` carry it.
_VERSION_URI = re.compile(r"^(?P<scheme>s3|file)://(?P<location>.+?)/models/(?P<name>[^/]+)/versions/(?P<version>v\d+)/?$")
_ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class RegistryError(AimassError):
    """A registry operation was refused: unknown version or alias, or an invalid name."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str  # v1, v2, ...
    created_at: str  # UTC, ISO 8601
    files: dict[str, str]  # relative path -> sha256
    lineage: dict[str, Any] = field(default_factory=dict)  # data md5, git commit, run id/name, base checkpoint
    metrics: dict[str, float] = field(default_factory=dict)
    parent_version: str | None = None


class ModelRegistry:
    def __init__(self, store: ObjectStore, model_name: str):
        self.store = store
        self.model_name = model_name
        self.prefix = validate_key(f"models/{model_name}")

    # ---- versions ----

    def push(self, model_dir: Path, metrics: dict[str, float] | None = None,
             parent_version: str | None = None) -> ModelVersion:
        """Upload a verified model directory as the next version.

        Raises:
            ArtifactIntegrityError: the directory's own manifest does not match its files (nothing is uploaded).
            ObjectStoreError: the store failed; the version is then not visible.
        """
        manifest = read_verified_manifest(model_dir)  # never publish bytes that are already wrong
        card_path = model_dir / CARD_FILE
        lineage = ModelCard.parse(card_path.read_text(), str(card_path)).lineage if card_path.is_file() else {}
        files = {name: sha256_file(model_dir / name) for name in [*manifest["sha256"], MANIFEST_NAME]}
        version = self._next_version()
        for name in sorted(files):
            self.store.upload(f"{self._version_prefix(version)}/files/{validate_key(name)}", model_dir / name)
        record = ModelVersion(
            name=self.model_name, version=version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            files=files, lineage=dict(lineage), metrics=dict(metrics or {}),
            parent_version=parent_version)
        self.store.write(f"{self._version_prefix(version)}/{RECORD_FILE}",
                         json.dumps(asdict(record), indent=2, sort_keys=True).encode())
        return record

    def versions(self) -> list[ModelVersion]:
        records = [key for key in self.store.list(f"{self.prefix}/versions/") if key.endswith(f"/{RECORD_FILE}")]
        parsed = [ModelVersion(**json.loads(self.store.read(key))) for key in records]
        return sorted(parsed, key=lambda record: int(record.version[1:]))

    def get(self, version_or_alias: str) -> ModelVersion:
        version = self.resolve(version_or_alias)
        key = f"{self._version_prefix(version)}/{RECORD_FILE}"
        if not self.store.exists(key):
            raise RegistryError(f"{self.model_name} has no version {version}; `aimass models list` shows them")
        return ModelVersion(**json.loads(self.store.read(key)))

    def pull(self, version_or_alias: str, target_dir: Path) -> ModelVersion:
        """Download a version into `target_dir` (replaced atomically) after checking every file's sha256.

        Raises:
            ArtifactIntegrityError: a downloaded file differs from the sha256 recorded at push time.
        """
        record = self.get(version_or_alias)
        with atomic_directory(target_dir) as staging:
            for name, expected in sorted(record.files.items()):
                local = staging / name
                local.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(f"{self._version_prefix(record.version)}/files/{validate_key(name)}", local)
                actual = sha256_file(local)
                if actual != expected:
                    raise ArtifactIntegrityError(
                        f"{self.model_name} {record.version}: {name} has sha256 {actual}, but {expected} was "
                        f"recorded when it was pushed; refusing the download from {self.store.description}")
        return record

    def read_file(self, version_or_alias: str, name: str) -> tuple[ModelVersion, bytes]:
        """One file of a version (its model.json, say) without pulling the rest, checked against its sha256."""
        record = self.get(version_or_alias)
        data = self.store.read(f"{self._version_prefix(record.version)}/files/{validate_key(name)}")
        if hashlib.sha256(data).hexdigest() != record.files.get(name):
            raise ArtifactIntegrityError(f"{self.model_name} {record.version}: {name} differs from the sha256 recorded "
                                         f"when it was pushed; refusing it from {self.store.description}")
        return record, data

    def storage_uri(self, version: str) -> str:
        """Where a version lives, e.g. s3://aimass-models/models/<name>/versions/v3 (what a Helm revision pins)."""
        return f"{self.store.uri}/{self._version_prefix(version)}"

    # ---- aliases ----

    def promote(self, version_or_alias: str, alias: str) -> ModelVersion:
        """Point `alias` at a version (aliases move; versions never change)."""
        if not _ALIAS.match(alias):
            raise RegistryError(f"invalid alias {alias!r}: lowercase letters, digits and '-', starting with a letter")
        record = self.get(version_or_alias)
        self.store.write(f"{self.prefix}/aliases/{alias}.json", json.dumps({"version": record.version}).encode())
        return record

    def aliases(self) -> dict[str, str]:
        keys = self.store.list(f"{self.prefix}/aliases/")
        return {Path(key).stem: json.loads(self.store.read(key))["version"] for key in keys}

    def resolve(self, version_or_alias: str) -> str:
        if _VERSION.match(version_or_alias):
            return version_or_alias
        alias_key = f"{self.prefix}/aliases/{validate_key(version_or_alias)}.json"
        if not self.store.exists(alias_key):
            raise RegistryError(f"{version_or_alias!r} is neither a version (v1, v2, ...) nor an alias of "
                                f"{self.model_name}")
        return json.loads(self.store.read(alias_key))["version"]

    # ---- internals ----

    def _version_prefix(self, version: str) -> str:
        return f"{self.prefix}/versions/{version}"

    def _next_version(self) -> str:
        # Numbers of interrupted uploads count as taken, so a retried push never reuses a half-written prefix.
        numbers = [int(match.group(1)) for key in self.store.list(f"{self.prefix}/versions/")
                   if (match := _VERSION.match(key.split("/")[3]))]
        return f"v{max(numbers, default=0) + 1}"


def check_version_or_alias(text: str) -> str:
    """`text` if it names a version (v<N>) or could name an alias.

    Raises:
        RegistryError: it is neither (a path, say), naming what is expected.
    """
    if not (_VERSION.match(text) or _ALIAS.match(text)):
        raise RegistryError(f"{text!r} is neither a version (v1, v2, ...) nor an alias (lowercase letters, digits and "
                            "'-', starting with a letter, e.g. production); `aimass models list` shows them")
    return text


def manifest_sha256(record: ModelVersion) -> str:
    """The sha256 of a version's manifest.json, which lists every other file's sha256: one digest pins the model."""
    return record.files[MANIFEST_NAME]


def open_registry_at(storage_uri: str, config: AimassConfig) -> tuple[ModelRegistry, str]:
    """The registry holding the version at `storage_uri`, and that version.

    s3:// URIs use the endpoint and TLS setting of `config.registry` (credentials from the environment).

    Raises:
        RegistryError: the URI is not s3://<bucket>/models/<name>/versions/v<N> or file:///<folder>/models/...,
            or names another model than `config.registry.model_name`.
    """
    match = _VERSION_URI.match(storage_uri)
    if match is None:
        raise RegistryError(f"model URI {storage_uri!r} is not s3://<bucket>/models/<name>/versions/v<N> (or "
                            "file:///<folder>/models/<name>/versions/v<N>); `aimass models show VERSION` prints it")
    settings = config.registry
    if settings.model_name and match["name"] != settings.model_name:
        raise RegistryError(f"model URI {storage_uri!r} is for model {match['name']!r}, but this server serves "
                            f"{settings.model_name!r} (registry.model_name)")
    if match["scheme"] == "file":
        store: ObjectStore = LocalStore(Path("/" + match["location"].lstrip("/")))
    else:
        store = S3Store(settings.s3_endpoint, match["location"], secure=settings.s3_secure)
    return ModelRegistry(store, match["name"]), match["version"]


def registered_model_name(config: AimassConfig, dataset_name: str | None = None) -> str:
    """`registry.model_name`, else the data set's name made registry-safe.

    Raises:
        RegistryError: neither is known (no data set imported and no name configured).
    """
    if config.registry.model_name:
        return config.registry.model_name
    if dataset_name:
        return model_name_for(dataset_name)
    raise RegistryError("no model name: import a data set (`aimass data import`), whose name the model takes, or "
                        "set registry.model_name")


def open_registry(config: AimassConfig, dataset_name: str | None = None) -> ModelRegistry:
    """The registry `config.registry` describes (local folder by default), for the model named by
    `registered_model_name`."""
    settings = config.registry
    if settings.backend == "local":
        store: ObjectStore = LocalStore(Path(config.data.repo_dir) / settings.local_dir)
    else:
        store = S3Store(settings.s3_endpoint, settings.s3_bucket, secure=settings.s3_secure)
    return ModelRegistry(store, registered_model_name(config, dataset_name))


def production_card(registry: ModelRegistry, alias: str = "production") -> tuple[ModelVersion, ModelCard] | None:
    """The version `alias` points at and its model card, or None when no version carries the alias.

    Raises:
        ArtifactIntegrityError: its card is of a format this aimass does not read (an earlier aimass wrote it).
    """
    if alias not in registry.aliases():
        return None
    record, data = registry.read_file(alias, CARD_FILE)
    return record, ModelCard.parse(data, f"{registry.model_name} {record.version}'s {CARD_FILE}")


def production_or_why_not(registry: ModelRegistry) -> tuple[tuple[ModelVersion, ModelCard] | None, str]:
    """(the production version and its card, "") or (None, why there is none to compare with): no version carries
    the alias yet, or an earlier aimass wrote its card."""
    try:
        found = production_card(registry)
    except ArtifactIntegrityError as error:
        return None, f"production was written by an earlier aimass ({error})"
    if found is None:
        return None, f"no production model of {registry.model_name} yet"
    return found, ""
