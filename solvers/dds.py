"""Decomposed diffusion sampler (DDS).

Chung, Lee & Ye, "Decomposed diffusion sampler for accelerating large-scale inverse problems",
ICLR 2024, Algorithm 1, in VE form. At each of the NFE steps:
    1. Tweedie:  x0 = denoise(x, sigma),  eps = (x - x0) / sigma;
    2. data consistency: `cg_iters` conjugate-gradient steps (default 10) started at x0, on
       ``A^H A x = A^H y`` for noiseless data, or on ``(I + gamma A^H A) x = x0 + gamma A^H y`` for noisy
       data (conjugated inner products on complex data);
    3. DDIM re-noising with eta (default 1.0) to the next level (`loop.ddim_step`).
The last step lands on sigma = 0 and returns the data-consistent x0. Default 50 NFE (the paper's 49-100).
Defaults eta = 1.0 and cg_iters = 10 were chosen on validation data (BrainWeb 49/50 random 4x/8x, head CT
72..83 sparse-60; the paper uses eta 0.85 and 5 CG steps): see the sweep in benchmarks/RESULTS.md.
For noisy data without an explicit `gamma`, gamma_i = v_i / sigma_y^2 with v_i = sigma_i^2 / (1 + sigma_i^2),
the variance of the Tweedie estimate for unit-variance data at level sigma_i (a documented heuristic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dc as dcs
from .loop import Context, Sampler, ddim_step
from .schedule import karras_sigmas, with_final_zero


@dataclass
class DDS(Sampler):
    """DDIM + Tweedie + CG data consistency."""

    name: ClassVar[str] = "dds"
    default_nfe: ClassVar[int] = 50

    eta: float = 1.0
    cg_iters: int = 10
    gamma: float | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        return with_final_zero(karras_sigmas(self.sigma_max or ctx.prior.info.sigma_max,
                                             self.sigma_min or ctx.prior.info.sigma_min, n_steps))

    def gamma_at(self, ctx: Context, sigma: float) -> float | None:
        if self.gamma is not None:
            return self.gamma
        if ctx.sigma_y == 0:
            return None
        return (sigma**2 / (1 + sigma**2)) / ctx.sigma_y**2

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        x0 = ctx.denoise(x, sigma)
        eps = (x - x0) / sigma
        x0 = dcs.cg_consistency(ctx.op, x0, ctx.y, self.cg_iters, self.gamma_at(ctx, sigma))
        return ddim_step(ctx, x0, eps, sigma, sigma_next, self.eta)
