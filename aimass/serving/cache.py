"""The server's local copies of registry versions, reused only while every file still matches its record."""
from __future__ import annotations

from pathlib import Path

from aimass.integrity import sha256_file
from aimass.registry import ModelRegistry, ModelVersion


class RegistryCache:
    """Pulled versions under `<cache>/<version>/`; a cached copy is reused only if every file still matches the
    registry record's sha256."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path):
        self.registry = registry
        self.cache_dir = cache_dir

    def fetch(self, version: str) -> Path:
        target = self.cache_dir / self.registry.model_name / version
        record = self.registry.get(version)
        if not self._is_intact(target, record):
            self.registry.pull(version, target)
        return target

    @staticmethod
    def _is_intact(directory: Path, record: ModelVersion) -> bool:
        return directory.is_dir() and all(
            (directory / name).is_file() and sha256_file(directory / name) == digest
            for name, digest in record.files.items())
