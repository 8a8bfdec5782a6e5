"""Diffusion posterior sampling (DPS).

Chung, Kim, Mccann, Klasky & Ye, "Diffusion posterior sampling for general noisy inverse problems",
ICLR 2023, Algorithm 1. The paper works on the VP variable u = sqrt(abar) x (x our VE variable,
abar = 1 / (1 + sigma^2)): an ancestral step, then

    u_{i+1} <- u'_{i+1} - zeta_i grad_{u_i} || y - A denoise(x_i, sigma_i) ||^2,   zeta_i = zeta / || y - A denoise ||

(its Appendix C: the step is normalised by the residual norm; each sample has its own). The likelihood
derivation gives zeta_i = 1 / sigma_y^2 for Gaussian noise (its eq. 16); the normalised step replaces that
constant in practice, so sigma_y does not enter the update (as in the paper's experiments, which state
zeta, not sigma_y). In our VE variable, with grad_u = grad_x / sqrt(abar_i) and x = u / sqrt(abar):

    x_{i+1} <- x'_{i+1} - zeta sqrt((1 + sigma_i^2)(1 + sigma_{i+1}^2)) grad_{x_i} ||r||^2 / ||r||,  r = y - A denoise(x_i)

so `zeta` is in the paper's units (its values 0.1..10 transfer; at high noise the VE step is (1 + sigma^2)
times the un-converted one). The data enter in the prior's intensity scale (unit p99), as the paper's in
[-1, 1]. Default zeta = 1.5: the step the earlier VE default (3.0 on grad ||r||, chosen on validation data:
see benchmarks/RESULTS.md, Solver defaults) took at low noise (grad ||r||^2 / ||r|| = 2 grad ||r||); at high
noise it is now (1 + sigma^2) times larger, as the paper's. Not re-tuned on validation data since the conversion.
The guidance per step is fixed, so its total grows with NFE: DPS is not a consistent sampler, and its
error on the closed-form Gaussian test depends on NFE (tests/solvers/test_solvers_noise.py). NFE = number of steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .loop import Context, Sampler, reverse_diffusion_step
from .schedule import karras_sigmas, sampler_noise_range, with_final_zero


def vp_factor(sigma: float, sigma_next: float) -> float:
    """``1 / (sqrt(abar_i) sqrt(abar_{i+1}))`` with abar = 1 / (1 + sigma^2): turns a VP-variable step into the VE one."""
    return math.sqrt((1 + sigma**2) * (1 + sigma_next**2))


@dataclass
class DPS(Sampler):
    """Reverse diffusion with a measurement-gradient step through the denoiser."""

    name: ClassVar[str] = "dps"
    default_nfe: ClassVar[int] = 500

    zeta: float = 1.5
    sigma_max: float | None = None
    sigma_min: float | None = None

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        hi, lo = sampler_noise_range(self, ctx)
        return with_final_zero(karras_sigmas(hi, lo, n_steps))

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = ctx.denoise(xg, sigma)
            r = ctx.op.forward(d) - ctx.y
            sq = r.abs().pow(2).flatten(1).sum(1)
            # zeta_i = zeta / ||r|| per sample, applied to grad ||r||^2: the sum's gradient splits per sample
            weighted = (sq / sq.detach().sqrt().clamp_min(1e-12)).sum()
            with ctx.network_clock(x.device):  # the backward pass is almost all network
                (grad,) = torch.autograd.grad(weighted, xg)
        x_next = reverse_diffusion_step(ctx, x, sigma, sigma_next, denoised=d.detach())
        return x_next - self.zeta * vp_factor(sigma, sigma_next) * grad
