"""Lineage: which data, code and pipeline run produced an artifact."""
from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lineage:
    data_md5: str  # DVC md5 of the data directory pinned by data.dvc
    git_commit: str  # commit of the pipeline code, suffixed "-dirty" when the tree had uncommitted changes
    run_id: str  # KFP pipeline job id
    run_name: str
    hyperparameters: str = "{}"  # JSON of what the hyper-parameter search chose, "{}" when none ran
    trigger: str = "manual"  # what started the run: manual, schedule, git, or monitor (a breach in production)
    trigger_reason: str = ""  # for monitor: the breached statistic or accuracy, its value, threshold and window

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def current_git_commit(repo_dir: Path) -> str:
    """HEAD's commit hash, with "-dirty" when tracked files differ from it; "unknown" outside a git checkout."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")
