"""DDP under ``torchrun``: the same script runs as one process or N.

Every rank computes the same epoch plan from the seed alone and takes its share, so ranks
never overlap and need no sampler state: every ``world``-th batch of a split held in memory
(``trainer.InMemory``), or an equal run of the streamed examples, whatever the store's
parts (``epoch_order.shard_examples``). Ranks run the same number of steps (the smallest
rank's count), so DDP's collectives never wait on a rank that has finished. Dev
evaluation runs on every rank over the full dev set, so early-stopping decisions agree
without communication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, size = torch_dist.get_rank(), torch_dist.get_world_size()
    return Dist(rank, size, int(os.environ.get("LOCAL_RANK", "0")))


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch_dist.barrier()


def shutdown(dist: Dist) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
