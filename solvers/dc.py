"""Data consistency: the vocabulary every solver draws from.

All functions take an operator ``A`` (`operators.LinearOperator`), the current image estimate ``x``
``[N, *domain]`` and the measurement ``y`` ``[*range]`` (broadcast over the N samples).

Hard steps (noiseless data): `project`, `gradient_step`, `cg_consistency` without gamma, `noised_measurement`.
Noisy data (sigma_y > 0): one weight, ``gamma = variance / sigma_y^2`` (`proximal_weight`), of the proximal step
of the likelihood, taken exactly (`weighted_projection`, `cg_consistency` with gamma) or explicitly
(`gradient_step`); `tweedie_variance` is DDS's variance, `likelihood_variance` score-ALD's annealed one.
"""
from __future__ import annotations

import torch

from operators.base import LinearOperator
from operators.linalg import conjugate_gradient


def residual(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A x - y``."""
    return op.forward(x) - y


def likelihood_gradient(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A^H (A x - y)``, the gradient of ``0.5 ||A x - y||^2`` (conjugate Wirtinger for complex x)."""
    return op.adjoint(residual(op, x, y))


def project(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + A^H (y - A x)``: the exact projection onto {A x = y} when ``A A^H`` is a projection
    (single-coil Cartesian MRI with a binary mask: the measured k-space is replaced by y)."""
    return x - likelihood_gradient(op, x, y)


def gradient_step(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, step: float | torch.Tensor) -> torch.Tensor:
    """``x - step * A^H (A x - y)``; with ``step = lam / ||A||^2`` a weighted projection step."""
    return x - step * likelihood_gradient(op, x, y)


def cg_consistency(
    op: LinearOperator,
    x0: torch.Tensor,
    y: torch.Tensor,
    n_iter: int,
    gamma: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Conjugate-gradient data consistency started at ``x0`` (DDS, Chung, Lee & Ye 2024, eq. 13-14).

    gamma None (noiseless data): ``n_iter`` CG steps on ``A^H A x = A^H y`` from ``x0``; the steps stay in
    the range of ``A^H A``, so the measured subspace is fitted and the rest of ``x0`` is kept.
    gamma > 0 (noisy data): ``(I + gamma A^H A) x = x0 + gamma A^H y``, the proximal step of
    ``||A x - y||^2 / 2`` with weight gamma, around ``x0`` (gamma a float or a tensor [N, 1, ..., 1]);
    see `proximal_weight` for what gamma is.
    """
    dims = len(op.domain_shape)
    if gamma is None:
        return conjugate_gradient(op.normal, op.adjoint(y).expand_as(x0), x0=x0, n_iter=n_iter, dims=dims)
    rhs = x0 + gamma * op.adjoint(y)
    return conjugate_gradient(lambda v: v + gamma * op.normal(v), rhs, x0=x0, n_iter=n_iter, dims=dims)


def noised_measurement(op: LinearOperator, y: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """``y + sigma A z``: the measurement of the forward-diffused image at level sigma (Song et al. 2022).

    noise: z, shaped like the images ``[N, *domain]``.
    """
    return y + sigma * op.forward(noise)


# -- noisy data: weights derived from the measurement noise std sigma_y ------------------------------
# Conventions: sigma (diffusion level) and sigma_y are stds of each real/imaginary part, in the prior's
# intensity scale; ``y = A x0 + n`` with n white of std sigma_y per part, so the log-likelihood is
# ``-||A x - y||^2 / (2 sigma_y^2)`` and its gradient ``-A^H (A x - y) / sigma_y^2``.


def tweedie_variance(sigma: float, sigma_data: float) -> float:
    """Per-part error variance of the Tweedie estimate ``E[x0 | x0 + sigma n]`` for data of per-part std
    `sigma_data` treated as white Gaussian: ``v = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)``
    (-> sigma^2 at low noise, -> sigma_data^2 at high noise)."""
    s2, d2 = sigma**2, sigma_data**2
    return s2 * d2 / (s2 + d2)


def proximal_weight(variance: float | torch.Tensor, sigma_y: float) -> float | torch.Tensor | None:
    """``gamma = variance / sigma_y^2``: the weight of the proximal step of the likelihood
    ``(I + gamma A^H A) x = x' + gamma A^H y`` (`cg_consistency`), or None for sigma_y = 0 (noiseless data:
    gamma -> infinity, the least-squares fit / projection).

    Two readings of `variance`, both per part:
      * the error variance v of an estimate ``x' ~ N(x, v I)`` (DDS: the Tweedie estimate, `tweedie_variance`):
        the step is then the posterior mean = MAP of x under ``y ~ N(A x, sigma_y^2 I)``, the minimiser of
        ``||x - x'||^2 / (2 v) + ||A x - y||^2 / (2 sigma_y^2)``;
      * the variance tau of a Langevin or reverse-diffusion move (`projection`, `ccdf`): the step is the
        implicit half of a split step that adds ``tau * grad log p(y | x)`` to the prior's drift, i.e. the
        posterior's own dynamics with the true likelihood; it tends to the hard projection as sigma_y -> 0.
    variance may be a tensor [N, 1, ..., 1] (one value per sample).
    """
    if sigma_y < 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    if sigma_y == 0:
        return None
    return variance / sigma_y**2


def weighted_projection(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """``x + gamma / (1 + gamma) A^H (y - A x)``: the exact proximal step when ``A A^H`` is a projection
    (``A^H A`` then has eigenvalues 0 and 1); gamma -> infinity gives `project`."""
    return x - (gamma / (1 + gamma)) * likelihood_gradient(op, x, y)


def likelihood_variance(sigma: float, sigma_min: float, sigma_y: float, op_norm2: float, gamma_scale: float = 1.0) -> float:
    """Annealed likelihood variance (per part) of score-ALD at level sigma (Jalal et al. 2021):

        sigma_y^2 + gamma_scale^2 (sigma^2 - sigma_min^2) ||A||^2,   floored at (gamma_scale sigma_min ||A||)^2

    The residual ``A x - y`` of an image at level sigma has std about ``sigma ||A||`` on top of the measurement
    noise; the annealing term vanishes at the last level sigma_min, where the variance is the true sigma_y^2.
    The floor matters only when ``sigma_y < gamma_scale sigma_min ||A||`` (nearly noiseless data): a
    Langevin step ``a = eps sigma_min^2`` is stable only for ``a ||A||^2 / variance < 2``.
    """
    anneal = gamma_scale**2 * max(sigma**2 - sigma_min**2, 0.0) * op_norm2
    floor = (gamma_scale * sigma_min) ** 2 * op_norm2
    return max(sigma_y**2, floor) + anneal
