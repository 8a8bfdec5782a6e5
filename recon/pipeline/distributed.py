"""Sharding inputs across torchrun ranks (torch.distributed).

Ranks exchange only a failure count at the end (`total`), so the process group is gloo on every device: NCCL
takes CUDA tensors only, and refuses two ranks on one GPU. A CUDA rank uses ``cuda:(LOCAL_RANK mod GPUs)``, so
more ranks than GPUs share them, and the group's timeout is long enough for a rank that finishes its share hours
before the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
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

    def device(self, requested: str, n_gpus: int | None = None) -> str:
        """``cuda:(LOCAL_RANK mod n_gpus)`` for a CUDA request under torchrun (n_gpus: the visible GPUs, None = ask
        torch); otherwise the requested device."""
        if requested.startswith("cuda") and self.distributed:
            n = torch.cuda.device_count() if n_gpus is None else n_gpus
            return f"cuda:{self.local_rank % max(n, 1)}"
        return requested


#: How long a rank waits at the final count for the slowest rank (gloo's default, 30 minutes, is shorter than
#: one file's reconstruction can be on a CPU).
GROUP_TIMEOUT = timedelta(days=7)


def init_from_env(device: str) -> RankInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo, whatever the device. A CUDA rank's
    GPU (`RankInfo.device`) becomes its current device, so that work asked for on plain "cuda" lands there too."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return RankInfo()
    info = RankInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(info.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=GROUP_TIMEOUT)
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
