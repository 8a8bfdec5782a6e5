"""Projection-based predictor-corrector sampling.

Chung & Ye, "Score-based diffusion models for accelerated MRI", MedIA 2022 (score-MRI), and
Song, Shen, Xing & Ermon, "Solving inverse problems in medical imaging with score-based generative
models", ICLR 2022. VE predictor-corrector (Song et al. 2021, Alg. 2/3): a reverse-diffusion predictor
and `corrector_steps` Langevin corrector steps with signal-to-noise ratio `snr`, each followed by a
data-consistency step. Default snr 0.32, chosen on validation data (BrainWeb 49/50, random 8x, 999 NFE:
snr 0.08 / 0.16 / 0.32 gave 23.0 / 23.3 / 23.6 dB; score-MRI's fastMRI setting is 0.16; the best value is at
the edge of that grid): benchmarks/RESULTS.md.

Data consistency (`dc`):
    "exact"     ``x + A^H (y - A x)``: the exact projection for `SingleCoilMRI` and `CoilwiseMRI`;
    "gradient"  ``x - lam / ||A||^2 A^H (A x - y)``: the SENSE variant (weighted gradient step);
    "cg"        ``x + lam (CG_k(A^H A, A^H (y - A x)))``, `cg_iters` steps: a weighted least-squares
                projection for operators whose ``A A^H`` is not a projection (CT);
    "per-coil"  score-MRI's per-coil variant for `MultiCoilMRI`: each coil image is sampled with
                ``P F`` and exact projection; the samples are root-sum-of-squares magnitudes;
    "auto"      exact for single-coil, gradient (SENSE) for multi-coil MRI, cg with noised
                measurements for real-valued operators (Song et al. 2022's CT setting).
`noised_measurement`: replace y by ``y + sigma A z`` at each level (Song et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from operators.base import LinearOperator
from operators.fft import rss
from operators.mri import CoilwiseMRI, MultiCoilMRI, SingleCoilMRI

from . import dc as dcs
from .loop import Context, Sampler, SolverError, reverse_diffusion_step
from .posterior import Posterior
from .schedule import geometric_sigmas, with_final_zero

DC_MODES = ("auto", "exact", "gradient", "cg", "per-coil")


@dataclass
class Projection(Sampler):
    """Predictor-corrector sampling with a data-consistency step after every predictor and corrector step.

    Hyper-parameters: snr (Langevin signal-to-noise ratio), corrector_steps, dc (see module docstring),
    lam (DC weight), cg_iters (for dc="cg"), noised_measurement (None = auto), sigma_max/sigma_min
    (None = the prior's range). NFE = n_steps * (1 + corrector_steps) - corrector_steps.
    """

    name: ClassVar[str] = "projection"
    default_nfe: ClassVar[int] = 1000

    snr: float = 0.32
    corrector_steps: int = 1
    dc: str = "auto"
    lam: float = 1.0
    cg_iters: int = 3
    noised_measurement: bool | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None

    def run(self, operator: LinearOperator, y: torch.Tensor, prior, **kw) -> Posterior:
        if self.dc not in DC_MODES:
            raise SolverError(f"{self.name}: dc must be one of {DC_MODES}, got '{self.dc}'")
        if self.dc == "per-coil":
            if not isinstance(operator, MultiCoilMRI) or operator.n_sets != 1:
                raise SolverError(f"{self.name}: dc='per-coil' needs a MultiCoilMRI with one map set")
            operator = CoilwiseMRI.from_sense(operator)
        return super().run(operator, y, prior, **kw)

    def steps_for_nfe(self, nfe: int) -> int:
        c = self.corrector_steps
        n = (nfe + c) // (1 + c)
        if n < 1:
            raise SolverError(f"{self.name}: nfe={nfe} buys no step")
        return n

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        hi = self.sigma_max or ctx.prior.info.sigma_max
        lo = self.sigma_min or ctx.prior.info.sigma_min
        return with_final_zero(geometric_sigmas(hi, lo, n_steps))

    # -- data consistency ----------------------------------------------------
    def _mode(self, op: LinearOperator) -> str:
        if self.dc in ("auto", "per-coil"):
            if isinstance(op, (SingleCoilMRI, CoilwiseMRI)):
                return "exact"
            return "cg" if not op.is_complex else "gradient"
        return self.dc

    def consistency(self, ctx: Context, x: torch.Tensor, sigma: float) -> torch.Tensor:
        noised = self.noised_measurement if self.noised_measurement is not None else not ctx.op.is_complex
        y = dcs.noised_measurement(ctx.op, ctx.y, sigma, ctx.noise(x)) if noised and sigma > 0 else ctx.y
        mode = self._mode(ctx.op)
        if mode == "exact":
            return dcs.project(ctx.op, x, y)
        if mode == "gradient":
            return dcs.gradient_step(ctx.op, x, y, self.lam / ctx.op_norm2)
        return x + self.lam * (dcs.cg_consistency(ctx.op, x, y, self.cg_iters) - x)

    # -- one step --------------------------------------------------------------
    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        x = self.consistency(ctx, reverse_diffusion_step(ctx, x, sigma, sigma_next), sigma_next)
        if sigma_next == 0:
            return x
        for _ in range(self.corrector_steps):
            x = self.consistency(ctx, self.langevin_corrector(ctx, x, sigma_next), sigma_next)
        return x

    def langevin_corrector(self, ctx: Context, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Langevin step with step size ``2 (snr ||z|| / ||score||)^2`` per sample (Song et al. 2021, Alg. 4)."""
        score = (ctx.denoise(x, sigma) - x) / sigma**2
        z = ctx.noise(x)
        dims = tuple(range(1, x.dim()))
        eps = 2 * (self.snr * z.abs().pow(2).sum(dims).sqrt() / score.abs().pow(2).sum(dims).sqrt().clamp_min(1e-12)) ** 2
        eps = eps.reshape(-1, *([1] * (x.dim() - 1)))
        return x + eps * score + (2 * eps).sqrt() * z

    def finalize(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        return rss(x, dim=-3) if isinstance(ctx.op, CoilwiseMRI) else x
