"""`Posterior`: what every solver and baseline returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Posterior:
    """The result of a reconstruction.

    Attributes:
        mean: posterior mean (or the baseline's estimate), [..., H, W] in the data's scale,
            complex for complex operators, real for real ones.
        std: per-voxel standard deviation of the *magnitude* of the samples, real [..., H, W];
            None for methods that return one estimate (baselines).
        samples: the N posterior samples [N, ..., H, W], or None.
        nfe: network evaluations made (0 for classical methods).
        wall_time: seconds spent.
        network_time: seconds spent inside the prior's network (part of `wall_time`).
        method: the method's name.
        hparams: the hyper-parameters used.
    """

    mean: torch.Tensor
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    nfe: int = 0
    wall_time: float = 0.0
    network_time: float = 0.0
    method: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: torch.Tensor, **kw: Any) -> "Posterior":
        """Mean over the first axis; std of the magnitude over the first axis (N-1 normalised when N > 1)."""
        mean = samples.mean(0)
        std = samples.abs().std(0) if samples.shape[0] > 1 else torch.zeros(samples.shape[1:], device=samples.device)
        return cls(mean=mean, std=std, samples=samples, **kw)

    @property
    def magnitude(self) -> torch.Tensor:
        """|mean|, real [..., H, W]."""
        return self.mean.abs()
