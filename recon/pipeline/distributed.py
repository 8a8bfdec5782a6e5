"""Sharding inputs across torchrun ranks (torch.distributed), one device per rank."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """Round-robin share of `items` for this rank (every item exactly once over all ranks)."""
        return list(items[self.rank::self.world_size])

    def device(self, requested: str) -> str:
        """cuda:LOCAL_RANK for CUDA runs, otherwise the requested device."""
        if requested.startswith("cuda") and self.distributed:
            return f"cuda:{self.local_rank}"
        return requested


def init_from_env(device: str) -> RankInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return RankInfo()
    info = RankInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def total(info: RankInfo, value: int) -> int:
    """Sum of an integer over ranks (the value itself when not distributed)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t)
    return int(t.item())


def finish(info: RankInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
