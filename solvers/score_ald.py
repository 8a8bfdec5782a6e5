"""Annealed Langevin dynamics for inverse problems (score-ALD).

Jalal, Arvinte, Daras, Price, Dimakis & Tamir, "Robust compressed sensing MRI with deep generative
priors", NeurIPS 2021. Geometric noise levels sigma_1 > ... > sigma_L; at each level `steps_per_level`
Langevin steps

    x <- x + a_i [ score(x, sigma_i) - A^H (A x - y) / (sigma_y^2 + gamma_i^2) ] + sqrt(2 a_i) z,
    a_i = step_scale * sigma_i^2          (Jalal et al.'s eps * sigma_i^2 / sigma_L^2, with step_scale = eps / sigma_L^2)
    gamma_i = gamma_scale * sigma_i * ||A||

gamma follows the noise level: the residual A x_i - y of an image at noise level sigma_i has std about
sigma_i ||A|| on top of the measurement noise, so the likelihood is annealed with it and reaches the true
likelihood (variance sigma_y^2) at the end. NFE = n_levels * steps_per_level.

Default step_scale = 1.0, chosen on validation data (BrainWeb 49/50, random 8x, 600 NFE: 0.1 / 0.3 / 1.0 gave
20.9 / 21.7 / 22.4 dB; benchmarks/RESULTS.md). The score term alone is stable for step_scale < 2; with few
levels (NFE << 600) the initial noise is not annealed away and the result is poor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dc as dcs
from .loop import Context, Sampler, SolverError
from .schedule import geometric_sigmas


@dataclass
class ScoreALD(Sampler):
    """Annealed Langevin dynamics with an annealed Gaussian likelihood."""

    name: ClassVar[str] = "score_ald"
    default_nfe: ClassVar[int] = 600

    steps_per_level: int = 3
    step_scale: float = 1.0
    gamma_scale: float = 1.0
    sigma_max: float | None = None
    sigma_min: float | None = None

    def steps_for_nfe(self, nfe: int) -> int:
        if nfe < self.steps_per_level:
            raise SolverError(f"{self.name}: nfe={nfe} is below steps_per_level={self.steps_per_level}")
        return nfe // self.steps_per_level

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        lev = geometric_sigmas(self.sigma_max or ctx.prior.info.sigma_max, self.sigma_min or ctx.prior.info.sigma_min, n_steps)
        return torch.cat([lev, lev[-1:]])

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        a = self.step_scale * sigma**2
        gamma2 = (self.gamma_scale * sigma) ** 2 * ctx.op_norm2
        weight = 1.0 / (ctx.sigma_y**2 + gamma2)
        for _ in range(self.steps_per_level):
            score = (ctx.denoise(x, sigma) - x) / sigma**2
            grad = score - weight * dcs.likelihood_gradient(ctx.op, x, ctx.y)
            x = x + a * grad + math.sqrt(2 * a) * ctx.noise(x)
        return x
