"""Object storage behind one small interface: a local folder (the embedded default) or S3-compatible storage
(MinIO on a cluster) through the `minio` client.

Keys are relative, slash-separated paths. Every key is validated before use, so no caller can reach outside the
store's root or bucket prefix with `..`, an absolute path or their percent-encoded forms.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from aimass.errors import AimassError

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ACCESS_KEY_VARIABLE = "AIMASS_S3_ACCESS_KEY"
SECRET_KEY_VARIABLE = "AIMASS_S3_SECRET_KEY"


class ObjectStoreError(AimassError):
    """The object store refused or failed an operation; the message names the store and the key."""


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key (segments of letters, digits, `.`, `_`, `-`; no `..`).

    Raises:
        ObjectStoreError: naming the key and what is wrong with it.
    """
    if not key or key.startswith("/") or "\\" in key or "%" in key:
        raise ObjectStoreError(f"invalid object key {key!r}: keys are relative, slash-separated and not encoded")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise ObjectStoreError(f"invalid object key {key!r}: segment {segment!r} is not allowed")
    return key


class ObjectStore(ABC):
    uri: str  # where the store is, as file:///<folder> or s3://<bucket>; keys are appended with '/'
    description: str  # where the objects live, for messages

    @abstractmethod
    def upload(self, key: str, source: Path) -> None: ...

    @abstractmethod
    def download(self, key: str, target: Path) -> None: ...

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def write(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a folder-like prefix ending in '/'), recursively, sorted."""


class LocalStore(ObjectStore):
    """Objects as files under `root`; writes go through a temporary file and a rename, so readers never see half."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.description = f"local folder {self.root}"
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _replace(self, key: str, write) -> None:
        """Write through a hidden staging file beside the target, then rename it into place."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as staging:
            write(staging)
        os.replace(staging.name, target)

    def upload(self, key: str, source: Path) -> None:
        def copy(staging) -> None:
            with open(source, "rb") as stream:
                shutil.copyfileobj(stream, staging)

        self._replace(key, copy)

    def download(self, key: str, target: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectStoreError(f"{key} not found in {self.description}")
        shutil.copyfile(source, target)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ObjectStoreError(f"{key} not found in {self.description}")
        return path.read_bytes()

    def write(self, key: str, data: bytes) -> None:
        self._replace(key, lambda staging: staging.write(data))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / validate_key(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(path.relative_to(self.root).as_posix() for path in base.rglob("*")
                      if path.is_file() and not path.name.startswith("."))


class S3Store(ObjectStore):
    """Objects in an S3-compatible bucket (MinIO, or S3 itself) through the minio client.

    Credentials come from the environment ($AIMASS_S3_ACCESS_KEY, $AIMASS_S3_SECRET_KEY; on a cluster, from a
    Secret mounted as those variables), never from configuration files.
    """

    def __init__(self, endpoint: str, bucket: str, secure: bool = True, access_key: str | None = None,
                 secret_key: str | None = None):
        from minio import Minio

        access_key = access_key or os.environ.get(ACCESS_KEY_VARIABLE)
        secret_key = secret_key or os.environ.get(SECRET_KEY_VARIABLE)
        if not access_key or not secret_key:
            raise ObjectStoreError(f"S3 credentials missing: set {ACCESS_KEY_VARIABLE} and {SECRET_KEY_VARIABLE}")
        self.bucket = bucket
        self.uri = f"s3://{bucket}"
        self.description = f"bucket {bucket} at {'https' if secure else 'http'}://{endpoint}"
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure)

    def _call(self, action: str, key: str, operation):
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            return operation()
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                raise ObjectStoreError(f"{key} not found in {self.description} ({error.code})") from error
            raise ObjectStoreError(f"{action} {key} in {self.description} failed: {error.code}: {error.message}") \
                from error
        except (HTTPError, OSError) as error:
            raise ObjectStoreError(f"{action} {key}: {self.description} is unreachable ({error})") from error

    def ensure_bucket(self) -> None:
        if not self._call("check", self.bucket, lambda: self.client.bucket_exists(self.bucket)):
            self._call("create", self.bucket, lambda: self.client.make_bucket(self.bucket))
        self._bucket_ready = True

    def _before_writing(self) -> None:
        """The bucket is made on the first write, not when the store is opened: reading commands (release status,
        lineage) must work, and fail only where they read, while the store is down."""
        if not getattr(self, "_bucket_ready", False):
            self.ensure_bucket()

    def upload(self, key: str, source: Path) -> None:
        self._before_writing()
        self._call("upload", key, lambda: self.client.fput_object(self.bucket, validate_key(key), str(source)))

    def download(self, key: str, target: Path) -> None:
        self._call("download", key, lambda: self.client.fget_object(self.bucket, validate_key(key), str(target)))

    def read(self, key: str) -> bytes:
        def fetch() -> bytes:
            response = self.client.get_object(self.bucket, validate_key(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("read", key, fetch)

    def write(self, key: str, data: bytes) -> None:
        import io

        self._before_writing()
        self._call("write", key, lambda: self.client.put_object(
            self.bucket, validate_key(key), io.BytesIO(data), length=len(data)))

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", key, lambda: self.client.stat_object(self.bucket, validate_key(key)))
            return True
        except ObjectStoreError as error:
            if "not found" in str(error):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        validate_key(prefix.rstrip("/"))
        try:
            return sorted(self._call("list", prefix, lambda: [
                item.object_name for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]))
        except ObjectStoreError as error:
            if "NoSuchBucket" in str(error):
                return []  # nothing was ever written: an empty store
            raise
