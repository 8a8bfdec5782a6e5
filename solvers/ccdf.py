"""Come-closer-diffuse-faster (CCDF).

Chung, Sim & Ye, "Come-closer-diffuse-faster: accelerating conditional diffusion models for inverse
problems through stochastic contraction", CVPR 2022. Instead of starting the reverse diffusion from pure
noise at sigma_max, forward-diffuse an initial estimate to ``sigma_start`` (the paper's t0) and run the
reverse steps (predictor + data consistency, `solvers.predictor_corrector`, the steps of `projection`,
without corrector by default) from there:

    x_start = x_init + sigma_start * z,   x_init in {zero-filled A^H y, least-squares (CG-SENSE / CGLS),
                                                  a given image such as a U-Net output}

Defaults: sigma_start = 0.1 in the prior's scale (unit p99 intensity) and 20 NFE, chosen on validation data
(lower starts scored higher PSNR with a least-squares start): see benchmarks/RESULTS.md, Solver defaults.
A low start contracts the posterior spread: ccdf's std is an under-estimate of the uncertainty, more so than
dds's.

Noisy data (sigma_y > 0): data consistency as `projection`'s (proximal likelihood step weighted by each move's
variance), and the "least-squares" start is ridge least squares, ``(I + gamma A^H A) x = gamma A^H y`` with
gamma = sigma_d^2 / sigma_y^2 (sigma_d = ``prior.info.sigma_data``): the MAP under a white prior, so the start
does not carry the g-factor-amplified noise of plain least squares. With a start as low as sigma_y the chain
integrates only about sigma_start^2 / sigma_y^2 of likelihood weight, so the mean stays biased towards the
start; a higher sigma_start reduces that bias (measured on the noisy Gaussian test: see benchmarks/RESULTS.md,
Solver defaults). So the start is never below ``start_noise * sigma_y`` (default 3, i.e. at least 9x sigma_y^2
of likelihood weight; capped at the prior's sigma_max): on data as noisy as sigma_y = 0.1 it starts at 0.3, on
the real T1 file's noise level (sigma_y about 0.015 in the prior's scale) the validated 0.1 stays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import dc as dcs
from . import predictor_corrector as pc
from .loop import Context, SolverError, least_squares_image
from .schedule import geometric_sigmas, noise_range, with_final_zero

INITS = ("least-squares", "zero-filled")
LEAST_SQUARES_ITERS = 10


@dataclass
class CCDF(pc.PredictorCorrector):
    """Reverse diffusion with data consistency from a forward-diffused initial estimate.

    Hyper-parameters: sigma_start (the start level, in the prior's scale), start_noise (the start is at least
    start_noise * sigma_y), init ("least-squares",
    "zero-filled" or an image tensor [*domain] in the data's units), sigma_min (None = the prior's), and the
    predictor-corrector step's snr, corrector_steps, dc, lam, cg_iters, noised_measurement (as `projection`'s;
    see `solvers.predictor_corrector`). NFE = n_steps * (1 + corrector_steps) - corrector_steps.
    """

    name: ClassVar[str] = "ccdf"
    default_nfe: ClassVar[int] = 20

    corrector_steps: int = 0
    sigma_min: float | None = None
    sigma_start: float = 0.1
    start_noise: float = 3.0
    init: str | torch.Tensor = "least-squares"

    def start_level(self, ctx: Context) -> float:
        """``max(sigma_start, start_noise * sigma_y)`` in the prior's scale, at most the prior's sigma_max."""
        if self.start_noise < 0:
            raise SolverError(f"{self.name}: start_noise must be >= 0, got {self.start_noise}")
        return max(self.sigma_start, min(self.start_noise * ctx.sigma_y, ctx.prior.info.sigma_max))

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        start = self.start_level(ctx)
        _, lo = noise_range(None, self.sigma_min, start, ctx.prior.info.sigma_min,
                            f"{self.name} (sigma_start is its sigma_max)")
        return with_final_zero(geometric_sigmas(start, lo, n_steps))

    def init_image(self, ctx: Context) -> torch.Tensor:
        """The initial estimate in the prior's scale, [*domain]; a given tensor is in the data's units."""
        if isinstance(self.init, torch.Tensor):
            img = self.init.to(device=ctx.y.device, dtype=ctx.op.dtype)
            ctx.op.check_domain(img, "ccdf init")
            return img / ctx.scale
        if self.init == "zero-filled":
            return ctx.op.adjoint(ctx.y)
        if self.init == "least-squares":
            if ctx.sigma_y == 0:
                return least_squares_image(ctx.op, ctx.y)
            # noisy data: ridge least squares, the MAP under a white prior of per-part std sigma_data
            gamma = dcs.proximal_weight(ctx.prior.info.sigma_data**2, ctx.sigma_y)
            zero = torch.zeros(ctx.op.domain_shape, dtype=ctx.op.dtype, device=ctx.y.device)
            return dcs.cg_consistency(ctx.op, zero, ctx.y, LEAST_SQUARES_ITERS, gamma)
        raise SolverError(f"{self.name}: init must be a tensor or one of {INITS}, got '{self.init}'")

    def start(self, ctx: Context, sigma0: float) -> torch.Tensor:
        return self.init_image(ctx) + sigma0 * ctx.noise()
