"""Diffusion posterior sampling (DPS).

Chung, Kim, Mccann, Klasky & Ye, "Diffusion posterior sampling for general noisy inverse problems",
ICLR 2023, Algorithm 1, in VE form: a reverse-diffusion (ancestral) step, then

    x_{i+1} <- x_{i+1} - zeta * grad_{x_i} || y - A denoise(x_i, sigma_i) ||

with the norm (not squared) of each sample's own residual, backpropagated through the network and the
operator. Default `zeta` = 3.0 in the prior's intensity scale (unit p99), chosen on validation data
(BrainWeb 49, random 8x, 500 NFE: zeta 0.3 / 1 / 3 gave 20.7 / 21.5 / 22.0 dB; the best value is at the edge
of that grid and rests on one slice: benchmarks/RESULTS.md); NFE = number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .loop import Context, Sampler, reverse_diffusion_step
from .schedule import karras_sigmas, with_final_zero


@dataclass
class DPS(Sampler):
    """Reverse diffusion with a measurement-gradient step through the denoiser."""

    name: ClassVar[str] = "dps"
    default_nfe: ClassVar[int] = 500

    zeta: float = 3.0
    sigma_max: float | None = None
    sigma_min: float | None = None

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        return with_final_zero(karras_sigmas(self.sigma_max or ctx.prior.info.sigma_max,
                                             self.sigma_min or ctx.prior.info.sigma_min, n_steps))

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = ctx.denoise(xg, sigma)
            r = ctx.op.forward(d) - ctx.y
            norms = r.abs().pow(2).flatten(1).sum(1).sqrt()
            with ctx.network_clock(x.device):  # the backward pass is almost all network
                (grad,) = torch.autograd.grad(norms.sum(), xg)
        x_next = reverse_diffusion_step(ctx, x, sigma, sigma_next, denoised=d.detach())
        return x_next - self.zeta * grad
