"""One model trained by several processes: each process's rank, its shard of an epoch, and the collectives the fit
loop needs from them (summed metrics, the check that shards are disjoint)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one model (torch.distributed is initialised)."""

    rank: int
    world_size: int

    @property
    def is_first(self) -> bool:
        return self.rank == 0


def rank_shard(order: torch.Tensor, ranks: Ranks | None) -> torch.Tensor:
    """This rank's slice of an epoch's shuffled index (every rank draws the same permutation): the slices are
    disjoint and together cover every index, as torch's DistributedSampler does."""
    return order if ranks is None else order[ranks.rank::ranks.world_size]


def summed_over_ranks(value: torch.Tensor, ranks: Ranks | None) -> torch.Tensor:
    if ranks is not None:
        import torch.distributed as dist

        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def check_shards(indices: torch.Tensor, ranks: Ranks, device: torch.device) -> dict:
    """Gather every rank's first-epoch indices on every rank and record whether the shards were disjoint."""
    import torch.distributed as dist

    gathered = [torch.empty_like(indices) for _ in range(ranks.world_size)]
    dist.all_gather(gathered, indices)
    seen = [set(shard.tolist()) for shard in gathered]
    disjoint = sum(len(shard) for shard in seen) == len(set().union(*seen))
    return {"world_size": ranks.world_size, "backend": dist.get_backend(),
            "images_per_rank_first_epoch": [len(shard) for shard in seen], "disjoint_shards": disjoint}
