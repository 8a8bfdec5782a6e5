"""Conjugate gradient for Hermitian positive (semi-)definite image-to-image maps."""
from __future__ import annotations

from typing import Callable

import torch

from .base import inner


def conjugate_gradient(
    normal_op: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    n_iter: int = 10,
    tol: float = 0.0,
    dims: int = 2,
) -> torch.Tensor:
    """Solve ``normal_op(x) = rhs`` by conjugate gradients, batched.

    Args:
        normal_op: Hermitian PSD map, e.g. ``lambda x: x + g * A.normal(x)``.
        rhs: right-hand side ``[..., *image]`` (complex or real).
        x0: starting point, same shape as `rhs` (zeros when None).
        n_iter: maximum number of iterations (each costs one `normal_op` call).
        tol: stop when every batch element has ``||r|| <= tol * ||rhs||``. The tolerance never goes below
            10x the dtype's machine epsilon: past that point the residual is rounding noise, and on singular
            systems (undersampled ``A^H A``) further steps would divide rounding noise by rounding noise.
        dims: number of trailing image dimensions; the leading ones are
            independent problems, each with its own step sizes.

    Inner products are conjugated, so complex problems are solved correctly.
    Batch elements that have converged stop moving (their step is zeroed).
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal_op(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = inner(r, r, dims).real
    rhs_norm2 = inner(rhs, rhs, dims).real
    tol = max(tol, 10 * torch.finfo(rs.dtype).eps)
    shape = rs.shape + (1,) * dims
    for _ in range(n_iter):
        active = rs > (tol**2) * rhs_norm2
        if not bool(active.any()):
            break
        Ap = normal_op(p)
        pAp = inner(p, Ap, dims).real
        alpha = torch.where(active & (pAp > 0), rs / pAp.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha.reshape(shape).to(x.dtype) * p
        r = r - alpha.reshape(shape).to(r.dtype) * Ap
        rs_new = inner(r, r, dims).real
        beta = torch.where(active, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta.reshape(shape).to(p.dtype) * p
        rs = rs_new
    return x
