"""Decomposed diffusion sampler (DDS).

Chung, Lee & Ye, "Decomposed diffusion sampler for accelerating large-scale inverse problems",
ICLR 2024, Algorithm 1, in VE form. At each of the NFE steps:
    1. Tweedie:  x0 = denoise(x, sigma),  eps = (x - x0) / sigma;
    2. data consistency: `cg_iters` conjugate-gradient steps (default 10) started at x0, on
       ``A^H A x = A^H y`` for noiseless data, or on ``(I + gamma A^H A) x = x0 + gamma A^H y`` for noisy
       data (conjugated inner products on complex data);
    3. DDIM re-noising with eta (default 1.0) to the next level (`loop.ddim_step`).
The last step lands on sigma = 0 and returns the data-consistent x0. Default 50 NFE (the paper's 49-100).
Defaults eta = 1.0 and cg_iters = 10 were chosen on validation data, MRI and CT (the paper uses eta 0.85 and
5 CG steps; more CG steps over-fit the MRI data): see benchmarks/RESULTS.md, Solver defaults.

Noisy data (sigma_y > 0). The paper's noisy variant (its Sec. 4, "noisy" experiments) solves
``min_x gamma/2 ||y - A x||^2 + 1/2 ||x - x0||^2`` by CG with a hand-set gamma. Here gamma is derived:
modelling the Tweedie estimate as ``x0 ~ N(x_true, v_i I)`` with v_i = sigma_i^2 sigma_d^2 / (sigma_i^2 +
sigma_d^2) (its error variance for white data of per-part std sigma_d = ``prior.info.sigma_data``) and
``y ~ N(A x_true, sigma_y^2 I)``, the posterior mean of x_true is that proximal step with
``gamma_i = gamma_scale * v_i / sigma_y^2`` (`dc.proximal_weight`). Without that weight, 10 exact CG steps
fit the noise and amplify it by the g-factor. An explicit `gamma` overrides the derived one.
Default gamma_scale = 1.0 (the derived weight), chosen on noisy validation data, where it beat a quarter of
the derived weight at every undersampling and noise level tried: see benchmarks/RESULTS.md, Solver defaults.

Re-noising (`renoise`): "denoiser" (default, the paper's) re-noises with the network's noise estimate
``eps = (x - x0) / sigma``; "posterior" with that of the data-consistent x0, ``eps = (x - x0_dc) / sigma``, so
that with eta = 1 the step is the ancestral step of the reverse SDE of p(x_sigma | y), whose score is
``(E[x0 | x_sigma, y] - x_sigma) / sigma^2`` (the proximal step is that conditional mean under the Gaussian
model above). "denoiser" adds each step's full correction to the next level's image, so the data count more
than once. On the noisy Gaussian test (tests/solvers/test_solvers_noise.py) "denoiser" pulls the mean towards the noisy
data and shrinks the spread, while "posterior" (or "denoiser" with a quarter of the derived weight) comes close
to the true posterior; on the validation slices "denoiser" scored the higher PSNR. So the default favours image
quality; ``renoise="posterior"`` is the calibrated sampler. Numbers: benchmarks/RESULTS.md, Solver defaults.

``posterior_below`` = c > 0 mixes the two: "posterior" re-noising at the levels sigma < c sigma_y, the paper's
above. There the proximal weight is small (gamma ||A||^2 ~ v / sigma_y^2 < c^2): data and prior both shape the
step, and carrying the correction forward counts the data again; higher up the step is close to a projection
and the paper's re-noising is what gives the better images. On the noisy Gaussian test c = 10 gives 0.35, 0.86
(mean error, std ratio; sigma_y 0.1) and 0.31, 0.91 at sigma_y 0.3; on fastMRI-like validation slices it cost
0.10 / 0.04 dB PSNR (random 4x / 8x) against c = 0 with the earlier prior and widened the spread (1.96-std coverage
on the test slices at 4x 0.887 -> 0.929 together with the fine-tuned prior): benchmarks/RESULTS.md, Solver
defaults. Default 10 (since the fine-tuned brain prior, 2026-11-30): the closed-form spread at a tenth of a dB;
0 restores the paper's re-noising everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dc as dcs
from .loop import Context, Sampler, SolverError, ddim_step
from .schedule import karras_sigmas, sampler_noise_range, with_final_zero

RENOISE = ("denoiser", "posterior")


@dataclass
class DDS(Sampler):
    """DDIM + Tweedie + CG data consistency (proximal for noisy data); see the module docstring.

    Hyper-parameters: eta (DDIM re-noising), cg_iters, gamma (a fixed proximal weight; None = derived),
    gamma_scale (of the derived weight), renoise ("denoiser" or "posterior"), posterior_below ("posterior"
    re-noising below that many sigma_y; 0 = the paper's everywhere), sigma_max/sigma_min
    (None = the prior's range). NFE = n_steps.
    """

    name: ClassVar[str] = "dds"
    default_nfe: ClassVar[int] = 50

    eta: float = 1.0
    cg_iters: int = 10
    gamma: float | None = None
    gamma_scale: float = 1.0
    renoise: str = "denoiser"
    posterior_below: float = 10.0
    sigma_max: float | None = None
    sigma_min: float | None = None

    def steps_for_nfe(self, nfe: int) -> int:
        if self.renoise not in RENOISE:
            raise SolverError(f"{self.name}: renoise must be one of {RENOISE}, got '{self.renoise}'")
        if not self.posterior_below >= 0:
            raise SolverError(f"{self.name}: posterior_below must be >= 0, got {self.posterior_below}")
        return nfe

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        hi, lo = sampler_noise_range(self, ctx)
        return with_final_zero(karras_sigmas(hi, lo, n_steps))

    def gamma_at(self, ctx: Context, sigma: float) -> float | None:
        """The proximal weight at level sigma (None: noiseless least-squares CG)."""
        if self.gamma is not None:
            return self.gamma
        return dcs.proximal_weight(self.gamma_scale * dcs.tweedie_variance(sigma, ctx.prior.info.sigma_data), ctx.sigma_y)

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        x0 = ctx.denoise(x, sigma)
        eps = (x - x0) / sigma
        gamma = self.gamma_at(ctx, sigma)
        x0 = dcs.cg_consistency(ctx.op, x0, ctx.y, self.cg_iters, gamma)
        if gamma is not None and (self.renoise == "posterior" or sigma < self.posterior_below * ctx.sigma_y):
            eps = (x - x0) / sigma
        return ddim_step(ctx, x0, eps, sigma, sigma_next, self.eta)
