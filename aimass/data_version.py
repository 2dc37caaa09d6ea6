"""Data versions through DVC: which version `data.dvc` pins, tracking a new import, and restoring the pinned bytes.

The pinned version is identified by DVC's md5 of the `data/` directory (the `.dir` hash in `data.dvc`); every
downstream artifact records it, so a model can always be traced back to the exact bytes it learned from.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from aimass.errors import DataVersionError


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


def _open_repo(repo_dir: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(repo_dir))
    except NotDvcRepoError as error:
        raise DataVersionError(f"{repo_dir} is not a DVC repository: run `dvc init` there first") from error
