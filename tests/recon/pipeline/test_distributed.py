"""torchrun ranks: the process group and each rank's device (the two-rank run itself is in test_pipeline)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from recon.pipeline import distributed
from recon.pipeline.distributed import RankInfo, init_from_env


@pytest.mark.parametrize("n_gpus,expected", [(1, ["cuda:0"] * 4), (2, ["cuda:0", "cuda:1"] * 2),
                                             (8, [f"cuda:{r}" for r in range(4)])])
def test_ranks_beyond_the_gpu_count_share_the_gpus(n_gpus, expected):
    got = [RankInfo(r, 4, r).device("cuda", n_gpus=n_gpus) for r in range(4)]
    assert got == expected


def test_a_single_process_and_cpu_ranks_keep_the_requested_device():
    assert RankInfo().device("cuda", n_gpus=1) == "cuda"
    assert RankInfo(1, 2, 1).device("cpu", n_gpus=1) == "cpu"


def test_cuda_ranks_join_a_gloo_group_with_a_long_timeout(monkeypatch):
    """The final failure count is a CPU tensor, which NCCL cannot reduce, and NCCL refuses two ranks on one GPU:
    the group is gloo even when CUDA is there, and a rank may wait for hours for the slowest one."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(kw))
    info = init_from_env("cuda")
    assert (info.rank, info.world_size, info.local_rank) == (1, 2, 1)
    assert len(calls) == 1 and calls[0]["backend"] == "gloo"
    assert calls[0]["timeout"] >= timedelta(days=1)
    assert current == ["cuda:0"]   # rank 1 shares the one GPU and makes it its current device
