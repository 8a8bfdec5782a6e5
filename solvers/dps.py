"""Diffusion posterior sampling (DPS), with the paper's normalised step or the Tweedie-covariance likelihood.

Chung, Kim, Mccann, Klasky & Ye, "Diffusion posterior sampling for general noisy inverse problems",
ICLR 2023, Algorithm 1: an ancestral step, then a step along the gradient, through the denoiser, of the
data misfit of the denoised image ``D(x_i) = E[x_0 | x_i]``. Two ways to size that step (`likelihood`):

``"tweedie"``: the likelihood ``p(y | x_i)`` with the covariance of ``x_0 | x_i`` that Tweedie's formula gives,
``Cov = sigma_i^2 J`` (J the denoiser's Jacobian; Boys et al. 2023, "Tweedie moment projected diffusions",
use its diagonal, Song et al. 2023, pseudo-inverse guided diffusion, ``r_i^2 I``)::

    grad_x log p(y | x) ~= J^H A^H (sigma_y^2 I + sigma^2 A J A^H)^-1 (y - A D(x))
    x_{i+1} <- x'_{i+1} + (sigma_i^2 - sigma_{i+1}^2) grad_x log p(y | x_i)

``x'`` the ancestral step: this is the conditional reverse SDE's step, exact for Gaussian priors as the solve
converges. The solve is `cg_iters` conjugate-gradient steps in measurement space from zero, each one
vector-Jacobian product (``J`` is symmetric for an MMSE denoiser), and one more for the gradient itself. DPS's
own approximation ``Cov = 0`` (its eq. 16: weight ``1 / sigma_y^2``) overshoots at every level where
``sigma`` is comparable to ``sigma_y``; its practical fix is the next mode.

``"normalised"`` (the paper's experiments, its Appendix C): ``zeta_i = zeta / ||y - A D(x_i)||`` replaces
``1 / sigma_y^2``, so sigma_y does not enter the update. On the VP variable u = sqrt(abar) x (x our VE
variable, abar = 1 / (1 + sigma^2)), ``u_{i+1} <- u'_{i+1} - zeta_i grad_{u_i} ||y - A D||^2``; in our VE
variable, with grad_u = grad_x / sqrt(abar_i) and x = u / sqrt(abar)::

    x_{i+1} <- x'_{i+1} - zeta sqrt((1 + sigma_i^2)(1 + sigma_{i+1}^2)) grad_{x_i} ||r||^2 / ||r||

so `zeta` is in the paper's units (its values 0.1..10 transfer). Default zeta = 1.5: the step the earlier VE
default (3.0 on grad ||r||, chosen on validation data: see benchmarks/RESULTS.md, Solver defaults) took at low
noise, chosen at 500 NFE (pass ``--nfe 500`` with this mode). The guidance per step is fixed, so its total grows
with NFE: this mode is not a consistent sampler, and its error on the closed-form Gaussian test depends on NFE
and zeta (tests/solvers/test_solvers_noise.py).

Default: "tweedie", 3 CG steps, 200 NFE (noisy closed form 0.21 / 1.05 posterior std error / std ratio, normalised
1.13 / 0.40; two fastMRI-like validation slices, against the normalised step at 500 NFE in about the same time:
+1.42 dB at random 4x, +0.33 dB at 8x; benchmarks/results/dps_likelihood.md). At sigma_y about 0.015 in the prior's
scale (the real files) 3 steps do not converge on the closed form (10 do); warm-starting the solve from the previous
level helps there but failed on trained networks, whose Jacobian is not exactly symmetric.

The data enter in the prior's intensity scale (unit p99), as the paper's in [-1, 1]. NFE = number of steps
(network forward passes; each step also takes 1 backward pass, "normalised", or ``cg_iters + 1``, "tweedie").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from operators.linalg import conjugate_gradient

from .loop import Context, Sampler, SolverError, reverse_diffusion_step
from .schedule import karras_sigmas, sampler_noise_range, with_final_zero

LIKELIHOODS = ("tweedie", "normalised")


def vp_factor(sigma: float, sigma_next: float) -> float:
    """``1 / (sqrt(abar_i) sqrt(abar_{i+1}))`` with abar = 1 / (1 + sigma^2): turns a VP-variable step into the VE one."""
    return math.sqrt((1 + sigma**2) * (1 + sigma_next**2))


@dataclass
class DPS(Sampler):
    """Reverse diffusion with a measurement-gradient step through the denoiser."""

    name: ClassVar[str] = "dps"
    default_nfe: ClassVar[int] = 200

    likelihood: str = "tweedie"
    zeta: float = 1.5
    cg_iters: int = 3
    sigma_max: float | None = None
    sigma_min: float | None = None

    def steps_for_nfe(self, nfe: int) -> int:
        if self.likelihood not in LIKELIHOODS:
            raise SolverError(f"dps: likelihood must be one of {', '.join(LIKELIHOODS)}; got {self.likelihood!r}")
        if self.cg_iters < 1:
            raise SolverError(f"dps: cg_iters must be >= 1, got {self.cg_iters}")
        return nfe

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        hi, lo = sampler_noise_range(self, ctx)
        return with_final_zero(karras_sigmas(hi, lo, n_steps))

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = ctx.denoise(xg, sigma)
            with ctx.network_clock(x.device):  # the backward passes are almost all network
                if self.likelihood == "tweedie":
                    move = (sigma**2 - sigma_next**2) * tweedie_likelihood_gradient(ctx, xg, d, sigma, self.cg_iters)
                else:
                    move = -self.zeta * vp_factor(sigma, sigma_next) * normalised_misfit_gradient(ctx, xg, d)
        return reverse_diffusion_step(ctx, x, sigma, sigma_next, denoised=d.detach()) + move


def normalised_misfit_gradient(ctx: Context, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``grad_x ||r||^2 / ||r||`` per sample, ``r = A d(x) - y`` (DPS's zeta_i = zeta / ||r||), [N, *domain]."""
    r = ctx.op.forward(d) - ctx.y
    sq = r.abs().pow(2).flatten(1).sum(1)
    # applied to grad ||r||^2 with ||r|| held fixed: the sum's gradient splits per sample
    (grad,) = torch.autograd.grad((sq / sq.detach().sqrt().clamp_min(1e-12)).sum(), x)
    return grad


def tweedie_likelihood_gradient(ctx: Context, x: torch.Tensor, d: torch.Tensor, sigma: float, cg_iters: int
                                ) -> torch.Tensor:
    """``J^H A^H (sigma_y^2 I + sigma^2 A J A^H)^-1 (y - A d)``, J the Jacobian of ``d = D(x, sigma)``, [N, *domain].

    x [N, *domain] requires grad and d was computed from it; `cg_iters` CG steps in measurement space, each one
    vector-Jacobian product through the network (the graph is kept until the last one), started from zero."""
    op = ctx.op

    def jacobian_adjoint(z: torch.Tensor) -> torch.Tensor:  # J^H A^H z
        return torch.autograd.grad(d, x, grad_outputs=op.adjoint(z), retain_graph=True)[0]

    r = ctx.y - op.forward(d.detach())  # no graph through the operator: only the network's Jacobian is needed
    z = conjugate_gradient(lambda p: ctx.sigma_y**2 * p + sigma**2 * op.forward(jacobian_adjoint(p)), r,
                           n_iter=cg_iters, dims=len(op.range_shape))
    return torch.autograd.grad(d, x, grad_outputs=op.adjoint(z))[0]
