"""Predictor-corrector steps with data consistency: the steps `projection` and `ccdf` are made of.

One step from sigma to sigma' (Song et al. 2021, Alg. 2/3, VE form): a reverse-diffusion predictor, then
`corrector_steps` Langevin corrector steps, each move followed by a data-consistency step (`consistency`).

Data consistency (`dc`), for images ``x`` [N, *domain] and a measurement ``y`` [*range]:
    "exact"     ``x + A^H (y - A x)``: the exact projection for operators with ``A.exact_projection``;
    "gradient"  ``x - lam / ||A||^2 A^H (A x - y)``: the SENSE variant (weighted gradient step);
    "cg"        ``x + lam (CG_k(A^H A, A^H (y - A x)))``, `cg_iters` steps: a weighted least-squares
                projection for operators whose ``A A^H`` is not a projection (CT);
    "per-coil"  score-MRI's per-coil variant: the chain runs on the operator's coil-wise form
                (``A.per_coil()``) with the exact projection, and the result is that form's `as_image`
                (root-sum-of-squares magnitudes for Cartesian multi-coil MRI);
    "auto"      exact where the operator says it is exact, gradient (SENSE) for other complex operators,
                cg with noised measurements for real-valued operators (Song et al. 2022's CT setting).
`noised_measurement`: replace y by ``y + sigma A z`` at each level (Song et al. 2022).

Noisy data (sigma_y > 0): a hard step would re-inject the measurement noise at every level, down to the
final image. Instead each move of variance tau (predictor: ``sigma^2 - sigma'^2``; corrector: its step eps)
is followed by the proximal step of the true likelihood ``-||A x - y||^2 / (2 sigma_y^2)`` with
``gamma = tau / sigma_y^2`` (`dc.proximal_weight`): the implicit half of a split step of the posterior's own
dynamics (prior drift + tau * likelihood gradient). Strong where the move is large against sigma_y (high
noise levels: nearly the hard step), weak below it; each mode's form tends to its hard step as sigma_y -> 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from operators.base import LinearOperator, OperatorCapabilityError
from priors.base import Prior

from . import dc as dcs
from .loop import Context, Sampler, SolverError, reverse_diffusion_step
from .posterior import Posterior

DC_MODES = ("auto", "exact", "gradient", "cg", "per-coil")


@dataclass(frozen=True)
class StepSettings:
    """The hyper-parameters of one predictor-corrector step; each sampler keeps its own defaults.

    Attributes:
        dc: data-consistency mode, one of `DC_MODES`.
        lam: DC weight of the "gradient" and "cg" modes.
        cg_iters: CG steps of the "cg" mode.
        noised_measurement: use ``y + sigma A z`` instead of y; None means "for real-valued operators".
        snr: Langevin signal-to-noise ratio of the corrector.
        corrector_steps: Langevin corrector steps after each predictor step.
    """

    dc: str
    lam: float
    cg_iters: int
    noised_measurement: bool | None
    snr: float
    corrector_steps: int





def check_dc(dc: str, method: str) -> None:
    """Raise `SolverError` unless `dc` is one of `DC_MODES`."""
    if dc not in DC_MODES:
        raise SolverError(f"{method}: dc must be one of {DC_MODES}, got '{dc}'")


def chain_operator(operator: LinearOperator, dc: str, method: str) -> LinearOperator:
    """The operator the chain runs on: ``operator.per_coil()`` for dc="per-coil", else `operator` itself.

    Raises `SolverError` for an unknown `dc`, or for "per-coil" with an operator that has no coil-wise form.
    """
    check_dc(dc, method)
    if dc != "per-coil":
        return operator
    try:
        return operator.per_coil()
    except OperatorCapabilityError as e:
        raise SolverError(f"{method}: dc='per-coil' needs an operator with a per-coil form: {e}") from None


def steps_for_nfe(nfe: int, corrector_steps: int, method: str) -> int:
    """Loop steps bought by `nfe` network evaluations: ``NFE = n_steps * (1 + c) - c`` (no corrector after the
    last predictor step). Raises `SolverError` when `nfe` buys no step."""
    n = (nfe + corrector_steps) // (1 + corrector_steps)
    if n < 1:
        raise SolverError(f"{method}: nfe={nfe} buys no step")
    return n


def dc_mode(dc: str, op: LinearOperator) -> str:
    """The hard-step form of `dc` on `op`: "exact", "gradient" or "cg" ("auto" and "per-coil" resolved)."""
    if dc in ("auto", "per-coil"):
        if op.exact_projection:
            return "exact"
        return "cg" if not op.is_complex else "gradient"
    return dc


def consistency(ctx: Context, x: torch.Tensor, sigma: float, tau: float | torch.Tensor,
                settings: StepSettings) -> torch.Tensor:
    """Data consistency at level sigma after a move of variance tau (per part; a float, or a real tensor
    [N, 1, ..., 1] for the corrector's per-sample step). x: [N, *domain] of the operator's dtype; same out.

    Noiseless data: the hard step of `settings.dc` (see the module docstring). Noisy data (sigma_y > 0): the
    proximal step of the true likelihood with gamma = tau / sigma_y^2 (`dc.proximal_weight`), in the form of the
    mode: exact -> ``x + gamma/(1+gamma) A^H (y - A x)``; gradient -> step ``min(gamma, lam / ||A||^2)`` (the
    explicit step, capped at the noiseless one for stability); cg -> `cg_iters` CG steps on
    ``(I + gamma A^H A) x = x + gamma A^H y``. Each tends to its noiseless step as sigma_y -> 0.
    Draws noise ``z`` (shaped like x) only when noised measurements are used and sigma > 0.
    """
    noised = settings.noised_measurement if settings.noised_measurement is not None else not ctx.op.is_complex
    y = dcs.noised_measurement(ctx.op, ctx.y, sigma, ctx.noise(x)) if noised and sigma > 0 else ctx.y
    mode = dc_mode(settings.dc, ctx.op)
    gamma = dcs.proximal_weight(tau, ctx.sigma_y)
    if mode == "exact":
        return dcs.project(ctx.op, x, y) if gamma is None else dcs.weighted_projection(ctx.op, x, y, gamma)
    if mode == "gradient":
        step = settings.lam / ctx.op_norm2
        if gamma is not None:
            step = gamma.clamp(max=step) if isinstance(gamma, torch.Tensor) else min(gamma, step)
        return dcs.gradient_step(ctx.op, x, y, step)
    return x + settings.lam * (dcs.cg_consistency(ctx.op, x, y, settings.cg_iters, gamma) - x)


def langevin_corrector(ctx: Context, x: torch.Tensor, sigma: float, snr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Langevin step with step size ``eps = 2 (snr ||z|| / ||score||)^2`` per sample (Song et al. 2021, Alg. 4).

    x: [N, *domain]. Returns the moved images [N, *domain] and eps, real [N, 1, ..., 1]. One NFE, one noise draw.
    """
    score = (ctx.denoise(x, sigma) - x) / sigma**2
    z = ctx.noise(x)
    dims = tuple(range(1, x.dim()))
    eps = 2 * (snr * z.abs().pow(2).sum(dims).sqrt() / score.abs().pow(2).sum(dims).sqrt().clamp_min(1e-12)) ** 2
    eps = eps.reshape(-1, *([1] * (x.dim() - 1)))
    return x + eps * score + (2 * eps).sqrt() * z, eps


def predictor_corrector_step(ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float,
                             settings: StepSettings) -> torch.Tensor:
    """One step from sigma to sigma_next: reverse-diffusion predictor + DC, then (unless sigma_next = 0)
    `settings.corrector_steps` times Langevin corrector + DC. x: [N, *domain] -> [N, *domain]."""
    x = consistency(ctx, reverse_diffusion_step(ctx, x, sigma, sigma_next), sigma_next, sigma**2 - sigma_next**2,
                    settings)
    if sigma_next == 0:
        return x
    for _ in range(settings.corrector_steps):
        x, eps = langevin_corrector(ctx, x, sigma_next, settings.snr)
        x = consistency(ctx, x, sigma_next, eps, settings)
    return x


@dataclass
class PredictorCorrector(Sampler):
    """Base of the samplers made of predictor-corrector steps (`projection`, `ccdf`): the step's
    hyper-parameters as fields with their defaults (see `StepSettings`), and the run, step and finalize
    they share. A subclass chooses its noise levels (`sigmas`) and its start.
    """

    snr: float = 0.32
    corrector_steps: int = 1
    dc: str = "auto"
    lam: float = 1.0
    cg_iters: int = 3
    noised_measurement: bool | None = None

    @property
    def settings(self) -> StepSettings:
        """This sampler's predictor-corrector hyper-parameters."""
        return StepSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StepSettings)})

    def run(self, operator: LinearOperator, y: torch.Tensor, prior: Prior, **kw) -> Posterior:
        """`Sampler.run` on the operator's coil-wise form for dc="per-coil", on `operator` otherwise."""
        return super().run(chain_operator(operator, self.dc, self.name), y, prior, **kw)

    def steps_for_nfe(self, nfe: int) -> int:
        return steps_for_nfe(nfe, self.corrector_steps, self.name)

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """`predictor_corrector_step` with this sampler's settings. x: [N, *domain] -> [N, *domain]."""
        return predictor_corrector_step(ctx, x, sigma, sigma_next, self.settings)

    def finalize(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        """The image the operator's user sees (`LinearOperator.as_image`): rss magnitudes for coil images."""
        return ctx.op.as_image(x)
