"""Data-parallel training in several processes on one node, through torch's own launcher (torchrun).

`train_in_processes` starts `python -m torch.distributed.run --standalone --nproc-per-node N -m
aimass.training.distributed JOB` and waits. Each worker joins the process group (NCCL on GPUs, gloo on CPU; a
collective that waits longer than `train.collective_timeout_seconds` fails instead of hanging), runs the ordinary
training loop with its rank (aimass/training/loop.py: DistributedDataParallel, disjoint shards, reduced metrics),
and rank 0 writes the model and the result. If any worker dies, torchrun stops the others and exits non-zero; the
step then fails naming the rank and how it ended. Across nodes the same workers run under Kubeflow's training
operator (aimass/training/operator_job.py).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

from aimass.config import AimassConfig
from aimass.errors import AimassError
from aimass.lineage import Lineage


class DistributedTrainingError(AimassError):
    """A training process failed or stopped answering; the message names the rank."""


def train_in_processes(config: AimassConfig, splits_dir: Path, model_dir: Path, lineage: Lineage,
                       training_set_dir: Path | None):
    """Train with `config.train.nproc` processes and return rank 0's TrainResult (the model is in `model_dir`).

    Raises:
        DistributedTrainingError: a rank failed, was killed, or timed out in a collective.
    """
    with tempfile.TemporaryDirectory(prefix="aimass-ddp-") as work:
        job, result_path = Path(work) / "job.json", Path(work) / "result.json"
        write_job(job, config, splits_dir, model_dir, lineage, training_set_dir, result_path)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={config.train.nproc}", "--max-restarts=0", "-m", "aimass.training.distributed",
                   str(job)]
        finished = subprocess.run(command, stdout=None, stderr=subprocess.PIPE, text=True, check=False,
                                  env={**os.environ, "OMP_NUM_THREADS": str(_threads_per_rank(config))})
        sys.stderr.write(finished.stderr[-20_000:])  # the workers' logs, as a single process would have shown them
        if finished.returncode != 0 or not result_path.is_file():
            raise DistributedTrainingError(_failure_summary(finished.stderr, config.train.nproc))
        return read_result(result_path)


def write_job(path: Path, config: AimassConfig, splits_dir: Path, model_dir: Path, lineage: Lineage,
              training_set_dir: Path | None, result_path: Path) -> None:
    """What every worker reads: the configuration, where the inputs are, and where rank 0 writes its outputs."""
    path.write_text(json.dumps({
        "config_json": config.to_json(), "splits_dir": str(splits_dir), "model_dir": str(model_dir),
        "training_set_dir": str(training_set_dir) if training_set_dir else None,
        "lineage": lineage.to_dict(), "result_path": str(result_path)}))


def read_result(path: Path):
    """Rank 0's TrainResult, as it wrote it."""
    from aimass.training.loop import EpochRecord, TrainResult

    raw = json.loads(path.read_text())
    history = [EpochRecord(**record) for record in raw.pop("history")]
    known = {f.name for f in fields(TrainResult)}
    return TrainResult(**{key: value for key, value in raw.items() if key in known}, history=history)


def _threads_per_rank(config: AimassConfig) -> int:
    return config.train.cpu_threads or max(1, len(os.sched_getaffinity(0)) // config.train.nproc)


def _failure_summary(stderr: str, nproc: int) -> str:
    """torchrun's own account of which rank failed and how, or the workers' last error line."""
    failures = re.findall(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)", stderr)
    timeouts = re.findall(r"(\w*Timeout\w*|timed out)[^\n]*", stderr)
    if failures:
        described = ", ".join(f"rank {rank} exited with code {code}" + (
            f" (signal {-int(code)})" if int(code) < 0 else "") for rank, code in failures)
        reason = f"{described}; torchrun stopped the other ranks"
    elif timeouts:
        reason = f"a collective timed out ({timeouts[0][:200]})"
    else:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else "no output"
    return (f"distributed training with {nproc} processes failed: {reason}. Nothing was written; the logs of "
            "every rank are above")


def main(job_path: str) -> None:
    """One worker: join the process group, train with this rank, and (rank 0) write the model and the result."""
    import torch
    import torch.distributed as dist

    from aimass.training.ranks import Ranks
    from aimass.training.stage import train

    job = json.loads(Path(job_path).read_text())
    config = AimassConfig.from_json(job["config_json"])
    on_gpu = torch.cuda.is_available() and config.train.device != "cpu"
    dist.init_process_group("nccl" if on_gpu else "gloo",
                            timeout=timedelta(seconds=config.train.collective_timeout_seconds))
    ranks = Ranks(dist.get_rank(), dist.get_world_size())
    try:
        training_set = Path(job["training_set_dir"]) if job["training_set_dir"] else None
        result = train(config, Path(job["splits_dir"]), Path(job["model_dir"]), Lineage(**job["lineage"]),
                       training_set, ranks=ranks)
        if ranks.is_first:
            Path(job["result_path"]).write_text(json.dumps(result.to_dict()))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK', '?')}] %(message)s")
    main(sys.argv[1])
