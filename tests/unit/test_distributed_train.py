"""Data-parallel training: real torchrun workers with gloo on CPU (2 processes), against one process."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from aimass.training.ranks import rank_shard, Ranks

from aimass.training.stage import train
from aimass.config import load_config
from aimass.data.arrays import load_image_sets
from aimass.training.distributed import DistributedTrainingError
from aimass.lineage import Lineage
from aimass.models.artifact import load_model

LINEAGE = Lineage(data_md5="d" * 32 + ".dir", git_commit="c" * 40, run_id="r", run_name="r")


def config_for(tiny_config, nproc: int, *overrides: str):
    return load_config("tiny", [f"data.repo_dir={tiny_config.data.repo_dir}", f"train.nproc={nproc}",
                                "train.epochs=2", *overrides])


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_are_disjoint_and_cover_the_epoch(world):
    order = torch.randperm(101)
    shards = [rank_shard(order, Ranks(rank, world)) for rank in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(101))
    assert sum(len(set(shard.tolist())) for shard in shards) == 101


@pytest.mark.slow
def test_two_gloo_processes_train_as_well_as_one_on_disjoint_shards(tiny_config, tiny_splits_dir, tmp_path):
    single = train(config_for(tiny_config, 1), tiny_splits_dir, tmp_path / "one", LINEAGE)
    double = train(config_for(tiny_config, 2), tiny_splits_dir, tmp_path / "two", LINEAGE)
    assert abs(double.best_validation_accuracy - single.best_validation_accuracy) <= 0.05
    assert double.distributed["world_size"] == 2 and double.distributed["backend"] == "gloo"
    assert double.distributed["disjoint_shards"] is True
    per_rank = double.distributed["images_per_rank_first_epoch"]
    train_images = len(load_image_sets(tiny_splits_dir)[0]["train"])
    assert per_rank[0] == per_rank[1] and sum(per_rank) == train_images // 64 * 64  # global batch 64, tail dropped
    assert load_model(tmp_path / "two").card.training["distributed"]["world_size"] == 2  # rank 0 wrote it


def _kill_rank_one_when_training(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the torchrun worker whose RANK is 1, a few seconds after it appears."""
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"aimass.training.distributed" in command and b"RANK=1" in environment and b"torch.distributed.run" not in command:
                time.sleep(8)  # past start-up, into the training loop
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_rank_fails_the_step_naming_it_instead_of_hanging(tiny_config, tiny_splits_dir, tmp_path):
    # still training when rank 1 is killed, however fast this machine trains (the kill ends it)
    config = config_for(tiny_config, 2, "train.steps=null", "train.epochs=1000",
                        "train.early_stopping=false", "train.collective_timeout_seconds=30")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_rank_one_when_training, args=(stop, killed), daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DistributedTrainingError, match=r"rank 1 exited with code -9 \(signal 9\)"):
            train(config, tiny_splits_dir, tmp_path / "model", LINEAGE)
    finally:
        stop.set()
    assert killed and time.monotonic() - started < 120
    assert not (tmp_path / "model").exists()
