"""Data consistency: the vocabulary every solver draws from.

All functions take an operator ``A`` (`operators.LinearOperator`), the current image estimate ``x``
``[N, *domain]`` and the measurement ``y`` ``[*range]`` (broadcast over the N samples).
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


def gradient_step(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, step: float) -> torch.Tensor:
    """``x - step * A^H (A x - y)``; with ``step = lam / ||A||^2`` a weighted projection step."""
    return x - step * likelihood_gradient(op, x, y)


def cg_consistency(
    op: LinearOperator,
    x0: torch.Tensor,
    y: torch.Tensor,
    n_iter: int,
    gamma: float | None = None,
) -> torch.Tensor:
    """Conjugate-gradient data consistency started at ``x0`` (DDS, Chung, Lee & Ye 2024, eq. 13-14).

    gamma None (noiseless data): ``n_iter`` CG steps on ``A^H A x = A^H y`` from ``x0``; the steps stay in
    the range of ``A^H A``, so the measured subspace is fitted and the rest of ``x0`` is kept.
    gamma > 0 (noisy data): ``(I + gamma A^H A) x = x0 + gamma A^H y``, the proximal step of
    ``||A x - y||^2 / 2`` with weight gamma, around ``x0``.
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
