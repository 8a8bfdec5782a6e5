"""Annealed Langevin dynamics for inverse problems (score-ALD).

Jalal, Arvinte, Daras, Price, Dimakis & Tamir, "Robust compressed sensing MRI with deep generative
priors", NeurIPS 2021. Geometric noise levels sigma_1 > ... > sigma_L; at each level `steps_per_level`
Langevin steps

    x <- x + a_i [ score(x, sigma_i) - A^H (A x - y) / (sigma_y^2 + gamma_i^2) ] + sqrt(2 a_i) z,
    a_i = step_scale * sigma_i^2          (Jalal et al.'s eps * sigma_i^2 / sigma_L^2, with step_scale = eps / sigma_L^2)
    gamma_i^2 = gamma_scale^2 (sigma_i^2 - sigma_L^2) ||A||^2

gamma follows the noise level: the residual A x_i - y of an image at noise level sigma_i has std about
sigma_i ||A|| on top of the measurement noise, so the likelihood is annealed with it; gamma_L = 0, so at the
last level the likelihood is the true one (variance sigma_y^2). Only when sigma_y < gamma_scale sigma_L ||A||
(noiseless or nearly noiseless data) is the variance floored at (gamma_scale sigma_L ||A||)^2 at every level
(`dc.likelihood_variance`): a Langevin step a_L = step_scale sigma_L^2 on a sharper likelihood is unstable.
NFE = n_levels * steps_per_level.

Default step_scale = 1.0, chosen on validation data (the largest and best of the values swept, so a wider
sweep could still gain): see benchmarks/RESULTS.md, Solver defaults. The score term alone is stable for
step_scale < 2; with few levels (NFE << 600) the initial noise is not annealed away and the result is poor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dc as dcs
from .loop import Context, Sampler, SolverError
from .schedule import geometric_sigmas, sampler_noise_range


@dataclass
class ScoreALD(Sampler):
    """Annealed Langevin dynamics with an annealed Gaussian likelihood (see the module docstring).

    Hyper-parameters: steps_per_level (Langevin steps per noise level), step_scale (a_i / sigma_i^2),
    gamma_scale (of the likelihood's annealing), sigma_max/sigma_min (None = the prior's range).
    NFE = n_levels * steps_per_level.
    """

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
        lev = geometric_sigmas(*sampler_noise_range(self, ctx), n_steps)
        return torch.cat([lev, lev[-1:]])

    def likelihood_variance(self, ctx: Context, sigma: float) -> float:
        """Per-part variance of the annealed likelihood at level sigma (`dc.likelihood_variance`)."""
        _, lo = sampler_noise_range(self, ctx)
        return dcs.likelihood_variance(sigma, lo, ctx.sigma_y, ctx.op_norm2, self.gamma_scale)

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        a = self.step_scale * sigma**2
        weight = 1.0 / self.likelihood_variance(ctx, sigma)
        for _ in range(self.steps_per_level):
            score = (ctx.denoise(x, sigma) - x) / sigma**2
            grad = score - weight * dcs.likelihood_gradient(ctx.op, x, ctx.y)
            x = x + a * grad + math.sqrt(2 * a) * ctx.noise(x)
        return x
