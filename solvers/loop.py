"""The one sampling loop every posterior sampler runs, and the context it hands to each step.

A sampler is a short class: which noise levels (`sigmas`), how to start (`start`), one step from
``sigma`` to ``sigma_next`` (`step`), how to finish (`finalize`). This module does the rest once:
input validation, bringing ``y`` to the prior's intensity scale and back, batching the N samples
through the network together, seeding, NFE and network-time accounting, progress, `Posterior`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from operators.base import LinearOperator, OperatorShapeError, power_iteration
from operators.linalg import conjugate_gradient
from priors.base import Prior, PriorMismatchError, standard_noise

from .posterior import Posterior


class SolverError(ValueError):
    """A request a solver cannot honour (bad shapes, budgets, mismatched prior)."""


@dataclass
class Context:
    """What a step sees: the problem in the prior's intensity scale, noise, and the network with a stopwatch.

    Attributes:
        op: the forward operator.
        y: the measurement divided by `scale`, [*range].
        prior: the prior.
        sigma_y: measurement noise std (per real/imag part) in the prior's scale.
        generator: the only source of randomness.
        n_samples: N.
        op_norm2: ``||A||^2`` (power iteration), for step sizes.
        scale: the data-to-prior intensity factor (data = scale * prior-scale image).
    """

    op: LinearOperator
    y: torch.Tensor
    prior: Prior
    sigma_y: float
    generator: torch.Generator
    n_samples: int
    op_norm2: float
    scale: float = 1.0
    network_time: float = 0.0

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (self.n_samples, *self.op.domain_shape)

    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The prior's MMSE denoiser, timed (counts one NFE for the whole batch)."""
        with self.network_clock(x.device):
            return self.prior.denoise(x, sigma)

    @contextmanager
    def network_clock(self, device: torch.device):
        """Adds the time spent in the block to `network_time` (forward or backward through the network)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.network_time += time.perf_counter() - t0

    def noise(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """Standard noise (N(0, 1) per real/imag part) shaped like `like` (default: the image batch)."""
        if like is None:
            like = torch.empty(self.image_shape, dtype=self.op.dtype, device=self.y.device)
        return standard_noise(like, self.generator)


def _gen_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


@dataclass
class Sampler:
    """Base class of posterior samplers. Subclasses are dataclasses whose fields are the hyper-parameters."""

    name: ClassVar[str] = "sampler"
    default_nfe: ClassVar[int] = 100

    # -- to implement ---------------------------------------------------------
    def steps_for_nfe(self, nfe: int) -> int:
        """Number of loop steps that spend `nfe` network evaluations (raise SolverError if impossible)."""
        return nfe

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:  # pragma: no cover - abstract
        """Noise levels visited, float64 [n_steps + 1] (step i goes from sigmas[i] to sigmas[i + 1])."""
        raise NotImplementedError

    def start(self, ctx: Context, sigma0: float) -> torch.Tensor:
        """Starting images at level sigma0: pure noise by default, [N, *domain]."""
        return sigma0 * ctx.noise()

    def step(self, ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def finalize(self, ctx: Context, x: torch.Tensor) -> torch.Tensor:
        return x

    # -- the loop -------------------------------------------------------------
    def run(
        self,
        operator: LinearOperator,
        y: torch.Tensor,
        prior: Prior,
        *,
        n_samples: int = 8,
        nfe: int | None = None,
        seed: int = 0,
        sigma_y: float = 0.0,
        scale: float | None = None,
        progress: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> Posterior:
        """Draw `n_samples` posterior samples of ``x`` given ``y = A x + noise``.

        Args:
            operator: the forward model; y: measurement [*range] (no batch dimension).
            prior: a `priors.Prior` whose value kind matches the operator's domain.
            n_samples: N, run as one batch through the network.
            nfe: network-evaluation budget (default `default_nfe`).
            seed: seeds the torch.Generator that draws every random number.
            sigma_y: measurement noise std per real/imag part, in the data's units.
            scale: data-to-prior intensity factor; default ``prior.estimate_scale`` of a
                least-squares image (10 CG iterations on ``A^H A x = A^H y``).
            progress: show a tqdm bar; callback: called as ``callback(i, n_steps, x)`` after each step.
        """
        self._validate(operator, y, prior, n_samples)
        nfe = self.default_nfe if nfe is None else int(nfe)
        if nfe < 1:
            raise SolverError(f"{self.name}: nfe must be >= 1, got {nfe}")
        if not sigma_y >= 0:
            raise SolverError(f"{self.name}: sigma_y (measurement noise std per real/imaginary part, data units) "
                              f"must be >= 0, got {sigma_y}")
        n_steps = self.steps_for_nfe(nfe)
        t_start = time.perf_counter()
        if scale is None:
            scale = prior.estimate_scale(least_squares_image(operator, y))
        gen = torch.Generator(device=_gen_device(y.device)).manual_seed(seed)
        norm_gen = torch.Generator(device=_gen_device(y.device)).manual_seed(0)
        ctx = Context(operator, y / scale, prior, sigma_y / scale, gen, n_samples,
                      op_norm2=power_iteration(operator, n_iter=20, device=y.device, generator=norm_gen) ** 2,
                      scale=scale)
        sigmas = self.sigmas(ctx, n_steps).tolist()
        nfe_before = prior.nfe
        x = self.start(ctx, sigmas[0])
        bar = _progress(n_steps, self.name) if progress else None
        with torch.no_grad():
            for i in range(n_steps):
                x = self.step(ctx, x, sigmas[i], sigmas[i + 1])
                if not torch.isfinite(x).all():
                    raise SolverError(f"{self.name}: non-finite values at step {i} (sigma {sigmas[i]:.4g}); "
                                      "try a smaller step size or more steps")
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(i, n_steps, x)
            x = self.finalize(ctx, x)
        if bar is not None:
            bar.close()
        samples = x.detach() * scale
        post = Posterior.from_samples(samples)
        post.nfe = prior.nfe - nfe_before
        post.wall_time = time.perf_counter() - t_start
        post.network_time = ctx.network_time
        post.method = self.name
        hp = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        hp = {k: ("<tensor>" if isinstance(v, torch.Tensor) else v) for k, v in hp.items()}
        post.hparams = {**hp, "n_steps": n_steps, "seed": seed, "scale": scale,
                        "sigma_y": sigma_y, "n_samples": n_samples}
        return post

    def _validate(self, op: LinearOperator, y: torch.Tensor, prior: Prior, n_samples: int) -> None:
        if n_samples < 1:
            raise SolverError(f"{self.name}: n_samples must be >= 1, got {n_samples}")
        try:
            op.check_range(y, "y")
        except OperatorShapeError as e:
            raise SolverError(str(e)) from None
        if y.dim() != len(op.range_shape):
            raise SolverError(f"{self.name}: y must have no batch dimension; got {tuple(y.shape)} for range {op.range_shape}")
        want = "complex" if op.is_complex else "real"
        if prior.info.value_kind != want:
            raise PriorMismatchError(f"prior '{prior.info.name}' is {prior.info.value_kind} but "
                                     f"{type(op).__name__} works on {want} images")


def least_squares_image(op: LinearOperator, y: torch.Tensor, n_iter: int = 10) -> torch.Tensor:
    """A rough image from the data: CG on ``A^H A x = A^H y`` (used for intensity scaling and inits)."""
    rhs = op.adjoint(y)
    return conjugate_gradient(op.normal, rhs, n_iter=n_iter, dims=len(op.domain_shape))


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def reverse_diffusion_step(ctx: Context, x: torch.Tensor, sigma: float, sigma_next: float,
                           denoised: torch.Tensor | None = None) -> torch.Tensor:
    """VE reverse-SDE (ancestral) step from sigma to sigma_next (Song et al. 2021, reverse diffusion predictor):
    ``x + (s^2 - s'^2) score + sqrt(s^2 - s'^2) z``; the last step (s' = 0) returns the denoised image."""
    d = ctx.denoise(x, sigma) if denoised is None else denoised
    if sigma_next == 0:
        return d
    var = sigma**2 - sigma_next**2
    score = (d - x) / sigma**2
    return x + var * score + math.sqrt(max(var, 0.0)) * ctx.noise(x)


def ddim_step(ctx: Context, x0: torch.Tensor, eps: torch.Tensor, sigma: float, sigma_next: float, eta: float) -> torch.Tensor:
    """DDIM update in VE form (Song, Meng & Ermon 2021, eq. 12, with x_ve = x_vp / sqrt(abar)):

        x' = x0 + sqrt(s'^2 - c^2) eps + c z,   c = eta * s' * sqrt(1 - s'^2 / s^2)

    eta = 0 is the deterministic DDIM ODE step, eta = 1 the ancestral (DDPM) step.
    """
    if sigma_next == 0:
        return x0
    c = eta * sigma_next * math.sqrt(max(1 - sigma_next**2 / sigma**2, 0.0))
    return x0 + math.sqrt(max(sigma_next**2 - c**2, 0.0)) * eps + c * ctx.noise(x0)
