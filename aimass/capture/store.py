"""Where captured requests and labels live: a folder, or a prefix in the S3 bucket of an object store, written by
every replica side by side without coordination.

Keys: `<prefix>/<kind>/<model>/<YYYYMMDD>/<HHMMSS>-<replica>-<sequence>.jsonl`, `kind` being `requests` or
`feedback`. Each file is written whole by one replica (a local file through a hidden staging file and a rename, an
S3 object by one PUT), so replicas never share a file and a reader never needs a lock. The day folder lets
`aimass monitor --since` list only the days it reads.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from aimass.config import AimassConfig
from aimass.errors import ConfigError
from aimass.object_store import LocalStore, ObjectStore, ObjectStoreError, S3Store, validate_key

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^?#]*))?$")
_FILE_TIME = re.compile(r"/(?P<day>\d{8})/(?P<clock>\d{6})-[^/]+\.jsonl$")


def replica_name() -> str:
    """This process's name in file names: the host (a pod's name on Kubernetes) and a token drawn at start, so a
    restarted replica never writes over the files of its previous life."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class CaptureFile:
    key: str
    written_at: float  # seconds since the epoch, from the key's day and clock


class CaptureStore:
    """Capture files of one model in a store, under a prefix."""

    def __init__(self, store: ObjectStore, prefix: str, model: str):
        self.store = store
        self.prefix = prefix.strip("/")
        self.model = model
        self.description = f"{store.description}{'/' + self.prefix if self.prefix else ''}"

    def _root(self, kind: str) -> str:
        return "/".join(part for part in (self.prefix, kind, self.model) if part)

    def write(self, kind: str, replica: str, sequence: int, data: bytes, at: float | None = None) -> str:
        moment = datetime.fromtimestamp(time.time() if at is None else at, timezone.utc)
        key = validate_key(f"{self._root(kind)}/{moment:%Y%m%d}/{moment:%H%M%S}-{replica}-{sequence:06d}.jsonl")
        self.store.write(key, data)
        return key

    def files(self, kind: str, since: float | None = None) -> list[CaptureFile]:
        """Every file of `kind` written at or after `since` (all when None), oldest first."""
        found = []
        for key in self.store.list(self._root(kind) + "/"):
            match = _FILE_TIME.search(key)
            if match is None:
                continue  # not a capture file (someone else's object under the prefix)
            written = datetime.strptime(match["day"] + match["clock"], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
            if since is None or written.timestamp() >= since - 1:  # file names keep whole seconds
                found.append(CaptureFile(key, written.timestamp()))
        return sorted(found, key=lambda file: (file.written_at, file.key))

    def read_state(self, name: str) -> dict:
        """A small JSON document kept beside the capture (the monitor's last retraining), {} when there is none."""
        key = validate_key("/".join(part for part in (self.prefix, "monitor", self.model, name) if part))
        return json.loads(self.store.read(key)) if self.store.exists(key) else {}

    def write_state(self, name: str, values: dict) -> None:
        key = validate_key("/".join(part for part in (self.prefix, "monitor", self.model, name) if part))
        self.store.write(key, json.dumps(values, indent=2, sort_keys=True).encode())

    def lines(self, file: CaptureFile) -> Iterator[bytes]:
        for line in self.store.read(file.key).splitlines():
            if line.strip():
                yield line


def open_capture_store(config: AimassConfig, model: str) -> CaptureStore:
    """The store `serving.capture.uri` names: a folder (relative to data.repo_dir) or s3://BUCKET/PREFIX on the
    registry's S3 endpoint, credentials from the environment as for the registry.

    Raises:
        ConfigError: the URI is neither.
        ObjectStoreError: S3 credentials are missing.
    """
    uri = config.serving.capture.uri
    if uri.startswith("s3://"):
        match = _S3_URI.match(uri)
        if match is None:
            raise ConfigError(f"serving.capture.uri {uri!r} is not s3://BUCKET/PREFIX (or a folder)")
        store: ObjectStore = S3Store(config.registry.s3_endpoint, match["bucket"], secure=config.registry.s3_secure)
        return CaptureStore(store, match["prefix"] or "", model)
    if "://" in uri:
        raise ConfigError(f"serving.capture.uri {uri!r}: give a folder or s3://BUCKET/PREFIX")
    folder = Path(uri) if Path(uri).is_absolute() else Path(config.data.repo_dir) / uri
    return CaptureStore(LocalStore(folder), "", model)


__all__ = ["CaptureFile", "CaptureStore", "ObjectStoreError", "open_capture_store", "replica_name"]
