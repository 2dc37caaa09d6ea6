"""Data versions through DVC: which version `data.dvc` pins, tracking a new import, and restoring the pinned bytes.

The pinned version is identified by DVC's md5 of the `data/` directory (the `.dir` hash in `data.dvc`); every
downstream artifact records it, so a model can always be traced back to the exact bytes it learned from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from aimass.config import DataConfig
from aimass.errors import DataVersionError
from aimass.object_store import ACCESS_KEY_VARIABLE, SECRET_KEY_VARIABLE

REMOTE_NAME = "aimass"  # the remote aimass configures for a command; .dvc/config is never rewritten


def pinned_data_md5(repo_dir: Path, dvc_file: str = "data.dvc") -> str:
    """The md5 of the data version that `dvc_file` pins, e.g. `2cd2...bd11.dir`.

    Raises:
        DataVersionError: the .dvc file is missing or has no single output with an md5.
    """
    path = repo_dir / dvc_file
    if not path.is_file():
        raise DataVersionError(f"{path} not found: run `aimass data import` to create and pin the data set")
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise DataVersionError(f"{path} must track exactly one output with an md5; run `aimass data import` again")
    return str(outs[0]["md5"])


def track_data(repo_dir: Path, data_path: str = "data") -> str:
    """`dvc add` the data directory and return the md5 now pinned in its .dvc file."""
    with _open_repo(repo_dir) as repo:
        repo.scm_context.quiet = True  # DVC's "git add data.dvc" hint would read as aimass's own instruction
        repo.add(str(repo_dir / data_path))  # DVC resolves relative paths against the cwd, not the repo
    return pinned_data_md5(repo_dir, f"{data_path}.dvc")


def ensure_pinned_data(repo_dir: Path, dvc_file: str = "data.dvc") -> str:
    """Make the workspace hold exactly the data version `dvc_file` pins, restoring it from the DVC cache if needed.

    Returns:
        The pinned md5.

    Raises:
        DataVersionError: the pinned version is neither in the workspace nor in the cache.
    """
    md5 = pinned_data_md5(repo_dir, dvc_file)
    target = str(repo_dir / dvc_file)
    with _open_repo(repo_dir) as repo:
        if not repo.status(targets=[target]):
            return md5
        try:
            repo.checkout(targets=[target], force=True)
        except Exception as error:  # DVC raises many types here (missing cache, partial checkout)
            raise DataVersionError(
                f"the data version {md5} pinned by {repo_dir / dvc_file} is not in the workspace nor in the DVC cache "
                f"({error}); run `aimass data import` to recreate it, or `dvc pull` from the remote"
            ) from error
        if repo.status(targets=[target]):
            raise DataVersionError(f"could not restore the data version {md5} pinned by {repo_dir / dvc_file}")
    return md5


def push_data(repo_dir: Path, settings: DataConfig) -> int:
    """Upload the pinned data version to the DVC remote; returns how many files were uploaded (0: already there).

    Raises:
        DataVersionError: no remote configured, the data is not in the workspace or cache, or the remote refused.
    """
    md5 = ensure_pinned_data(repo_dir, settings.dvc_file)
    with _open_repo(repo_dir, _remote_config(settings)) as repo:
        try:
            return repo.push(targets=[str(repo_dir / settings.dvc_file)], remote=REMOTE_NAME)
        except Exception as error:  # DVC wraps S3 errors in several types
            raise DataVersionError(f"could not push data version {md5} to {settings.remote_url}: "
                                   f"{_first_line(error)}") from error


def pull_data(repo_dir: Path, settings: DataConfig) -> str:
    """Make the workspace hold the data version `data.dvc` pins, downloading what the cache lacks from the remote.

    Returns:
        The pinned md5.

    Raises:
        DataVersionError: no remote configured, or the remote does not have that version (push it first).
    """
    md5 = pinned_data_md5(repo_dir, settings.dvc_file)
    target = str(repo_dir / settings.dvc_file)
    with _open_repo(repo_dir, _remote_config(settings)) as repo:
        try:
            repo.pull(targets=[target], remote=REMOTE_NAME, force=True)
        except Exception as error:  # DVC reports a missing version through several types
            raise DataVersionError(f"data version {md5} could not be pulled from {settings.remote_url} "
                                   f"({_first_line(error)}); was it pushed? `aimass data push` on a machine that "
                                   "has it") from error
        if repo.status(targets=[target]):
            raise DataVersionError(f"pulled data version {md5} from {settings.remote_url}, but the workspace "
                                   "still differs from it")
    return md5


def pin_data_version(repo_dir: Path, md5: str, dvc_file: str = "data.dvc", data_path: str = "data") -> None:
    """Write `dvc_file` pinning the data version `md5` (a DVC `.dir` hash), as a commit's data.dvc would."""
    if not md5.endswith(".dir") or len(md5) != 36:
        raise DataVersionError(f"{md5!r} is not a DVC directory hash (32 hex digits and '.dir'), as data.dvc holds")
    outs = [{"md5": md5, "hash": "md5", "path": data_path}]
    (repo_dir / dvc_file).write_text(yaml.safe_dump({"outs": outs}, sort_keys=False))


def fetch_data_version(scratch_dir: Path, md5: str, settings: DataConfig) -> Path:
    """A throw-away DVC repository in `scratch_dir` holding data version `md5`, pulled from the remote: how a pod,
    which has no clone of the repository, gets exactly the data a commit's data.dvc pins."""
    from dvc.repo import Repo

    Repo.init(str(scratch_dir), no_scm=True).close()
    (scratch_dir / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    analytics = false\n")
    pin_data_version(scratch_dir, md5, settings.dvc_file)
    pull_data(scratch_dir, settings)
    return scratch_dir


def _first_line(error: Exception) -> str:
    """DVC's messages span lines and carry terminal colours; the first line says what happened."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()[0]


def _remote_config(settings: DataConfig) -> dict:
    """DVC configuration naming the remote for one command, merged over the repository's own config files (so
    credentials in .dvc/config.local still work when the environment has none)."""
    if not settings.remote_url:
        raise DataVersionError("no DVC remote configured: set data.remote_url=s3://BUCKET/PATH (and "
                               "data.remote_endpoint=http://HOST:PORT for MinIO)")
    remote = {"url": settings.remote_url}
    if settings.remote_endpoint:
        remote["endpointurl"] = settings.remote_endpoint
    access_key, secret_key = os.environ.get(ACCESS_KEY_VARIABLE), os.environ.get(SECRET_KEY_VARIABLE)
    if access_key and secret_key:
        remote.update(access_key_id=access_key, secret_access_key=secret_key)
    return {"remote": {REMOTE_NAME: remote}}


def _open_repo(repo_dir: Path, config: dict | None = None):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(repo_dir), config=config)
    except NotDvcRepoError as error:
        raise DataVersionError(f"{repo_dir} is not a DVC repository: run `dvc init` there first") from error
