"""Iterative CT reconstructions: SIRT, CGLS and TV-regularised least squares (Chambolle-Pock).

Each comes as a tensor function ``f(y, A, ...) -> x`` (`sirt`, `cgls`, `tv_pdhg`) and as a baseline
``f(A, y, **hp) -> Posterior`` (`sirt_reconstruction`, `cgls_reconstruction`, `tv_reconstruction`; SIRT
and TV are registered as the CT baselines ``sirt`` and ``tv``). ``y`` is the sinogram [..., *range_shape],
``A`` any real CT operator (`ParallelBeam2D`, `FanBeam2D`, `ConeBeam3D` for SIRT and CGLS; 2D for TV),
possibly Poisson-weighted (`operators.weighted.WeightedOperator`); leading dimensions are independent slices.

SIRT iterates ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)``; CGLS runs conjugate
gradients on ``min ||A x - y||^2`` without forming ``A^T A``.

TV reconstruction solves

    min_{x >= 0}  1/2 ||A x - y||^2 + lam * unit * TV(x),     TV(x) = sum_pixels |grad x|_2 (isotropic)

with the diagonally preconditioned primal-dual hybrid gradient of Pock & Chambolle (2011, alpha = 1) on
``K = [A; c grad]``: dual steps ``sigma = 1 / (K 1)`` per row (``1 / (A 1)`` per sinogram bin, ``1 / (2c)``
for the gradient rows) and primal steps ``tau = 1 / (K^T 1)`` per pixel (``1 / (A^T 1 + 4c)``), with
``c = mean(A^T 1) / 4`` so both blocks weigh alike. The preconditioning matters for whitened Poisson data
(`recon.problems.ct.CTProblem.data_op`, weights spread over two decades): with one global step the
interior of the head barely moved in 100 iterations.

Units of ``lam``: TV is 1-homogeneous and the data term 2-homogeneous, so a weight that suits an image in
water units (water = 1) is ``unit`` times too large for the same image in attenuation per pixel
(``unit = mu_water * pixel_mm ~ 0.018``): the old absolute default (3.0, meant for water units, applied to
attenuation-per-pixel data) blurred real head CT to 27 dB. ``lam`` is therefore *relative*: ``unit`` is the
intensity unit of the image, by default `intensity_unit` (the 99th percentile of ``|x|`` of a 10-step CGLS
image, a data-derived scale that makes the result scale-equivariant: y -> c y gives x -> c x).
``DEFAULT_LAM_TV`` was chosen on head-CT validation slices 72..83 (``python -m benchmarks.tune_ct_tv``;
table in ``benchmarks/results/correctness_speed.md``).

References:
    Gregor J, Benson T. "Computational analysis and improvement of SIRT." IEEE TMI 2008;27:918-924.
    Hestenes MR, Stiefel E. "Methods of conjugate gradients for solving linear systems." 1952 (CGLS).
    Chambolle A, Pock T. "A first-order primal-dual algorithm for convex problems with applications
    to imaging." J Math Imaging Vis 2011;40:120-145.
    Pock T, Chambolle A. "Diagonal preconditioning for first order primal-dual algorithms in convex
    optimization." ICCV 2011:1762-1769.
    Sidky EY, Jorgensen JH, Pan X. "Convex optimization problem prototyping for image reconstruction
    in computed tomography with the Chambolle-Pock algorithm." Phys Med Biol 2012;57:3065-3091.
"""
from __future__ import annotations

import math
import time

import torch

from operators.base import LinearOperator, inner
from recon.baselines.registry import register
from solvers.posterior import Posterior

#: validation-chosen TV weight relative to `intensity_unit` (head CT 72..83, 60-view parallel beam)
DEFAULT_LAM_TV = 0.12


def _start(y: torch.Tensor, A: LinearOperator, x0: torch.Tensor | None) -> torch.Tensor:
    """The first iterate: ``x0`` copied, or zeros [..., *A.domain_shape] with the sinogram's leading dims."""
    A.check_range(y, "sinogram")
    lead = y.shape[: y.dim() - len(A.range_shape)]
    if x0 is None:
        return torch.zeros(*lead, *A.domain_shape, device=y.device, dtype=y.dtype)
    A.check_domain(x0, "x0")
    return x0.detach().clone()


def _inverse_sums(A: LinearOperator, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SIRT's weights ``R = 1 / (A 1)`` [*range_shape] and ``C = 1 / (A^T 1)`` [*domain_shape], zero where the
    sums vanish (below 1e-6 of their maximum)."""
    row = A.forward(torch.ones(A.domain_shape, device=like.device, dtype=like.dtype))
    col = A.adjoint(torch.ones(A.range_shape, device=like.device, dtype=like.dtype))
    r_w = torch.where(row > 1e-6 * row.max(), 1.0 / row.clamp_min(1e-30), torch.zeros_like(row))
    c_w = torch.where(col > 1e-6 * col.max(), 1.0 / col.clamp_min(1e-30), torch.zeros_like(col))
    return r_w, c_w


def sirt(y: torch.Tensor, A: LinearOperator, n_iter: int = 50, x0: torch.Tensor | None = None,
         nonneg: bool = False) -> torch.Tensor:
    """SIRT: ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)`` (zero where the sums vanish).

    Args:
        y: float sinogram ``[..., *range_shape]``.
        A: any real CT operator (`ParallelBeam2D`, `FanBeam2D`, `ConeBeam3D`).
        n_iter: iterations (two projections each).
        x0: start ``[..., *domain_shape]``; zeros when None.
        nonneg: clip the iterate at 0 after each step (attenuation is non-negative).

    Returns:
        float ``[..., *domain_shape]``. The weighted residual ``||y - A x||_R`` does not increase.
    """
    with torch.no_grad():
        x = _start(y, A, x0)
        r_w, c_w = _inverse_sums(A, y)
        for _ in range(n_iter):
            x = x + c_w * A.adjoint(r_w * (y - A.forward(x)))
            if nonneg:
                x = x.clamp_min(0.0)
        return x


def cgls(y: torch.Tensor, A: LinearOperator, n_iter: int = 20, x0: torch.Tensor | None = None) -> torch.Tensor:
    """CGLS: conjugate gradients on ``min ||A x - y||^2`` without forming ``A^T A`` (batched over leading dims).

    Args:
        y: float sinogram ``[..., *range_shape]``.
        A: any real CT operator.
        n_iter: iterations (two projections each); few iterations act as regularisation.
        x0: start ``[..., *domain_shape]``; zeros when None.

    Returns:
        float ``[..., *domain_shape]``; the residual ``||y - A x||`` does not increase.
    """
    dims_x, dims_y = len(A.domain_shape), len(A.range_shape)
    with torch.no_grad():
        x = _start(y, A, x0)
        r = y - A.forward(x)
        s = A.adjoint(r)
        p = s.clone()
        gamma = inner(s, s, dims_x)
        for _ in range(n_iter):
            q = A.forward(p)
            qq = inner(q, q, dims_y)
            alpha = torch.where(qq > 0, gamma / qq.clamp_min(1e-30), torch.zeros_like(qq))
            x = x + alpha.reshape(*alpha.shape, *(1,) * dims_x) * p
            r = r - alpha.reshape(*alpha.shape, *(1,) * dims_y) * q
            s = A.adjoint(r)
            gamma_new = inner(s, s, dims_x)
            beta = torch.where(gamma > 0, gamma_new / gamma.clamp_min(1e-30), torch.zeros_like(gamma))
            p = s + beta.reshape(*beta.shape, *(1,) * dims_x) * p
            gamma = gamma_new
        return x


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with a zero last row/column: real [..., H, W] -> [..., 2, H, W] (d/dy, d/dx)."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([gy, gx], dim=-3)


def divergence(g: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of `gradient`: [..., 2, H, W] -> [..., H, W], so ``<grad x, g> = -<x, div g>``."""
    gy, gx = g[..., 0, :, :], g[..., 1, :, :]
    dy = torch.zeros_like(gy)
    dx = torch.zeros_like(gx)
    dy[..., 0, :] = gy[..., 0, :]
    dy[..., 1:-1, :] = gy[..., 1:-1, :] - gy[..., :-2, :]
    dy[..., -1, :] = -gy[..., -2, :]
    dx[..., :, 0] = gx[..., :, 0]
    dx[..., :, 1:-1] = gx[..., :, 1:-1] - gx[..., :, :-2]
    dx[..., :, -1] = -gx[..., :, -2]
    return dy + dx


def intensity_unit(y: torch.Tensor, A: LinearOperator, n_iter: int = 10) -> float:
    """The image's intensity scale from its data: 99th percentile of ``|x|`` of an `n_iter`-step CGLS image
    (all slices of a batch together). y: float sinogram [..., *range_shape]; returns a positive float."""
    x = cgls(y, A, n_iter=n_iter).abs().flatten().float()
    if x.numel() > 2_000_000:
        x = x[:: x.numel() // 2_000_000 + 1]
    return max(float(torch.quantile(x, 0.99)), 1e-12)


def tv_pdhg(y: torch.Tensor, A: LinearOperator, lam: float = DEFAULT_LAM_TV, n_iter: int = 300,
            nonneg: bool = True, op_norm: float | None = None, x0: torch.Tensor | None = None,
            unit: float | None = None) -> torch.Tensor:
    """TV-regularised least squares by Chambolle-Pock; see the module docstring.

    Args:
        y: float sinogram [..., n_angles, n_detectors].
        A: a real 2D CT operator (`ParallelBeam2D`, `FanBeam2D`), possibly weighted.
        lam: TV weight (>= 0) relative to `unit` (the absolute weight is ``lam * unit``).
        n_iter: PDHG iterations (one forward and one back projection each).
        nonneg: constrain x >= 0.
        op_norm: unused (kept for callers of the unpreconditioned version; the steps come from ``A 1``, ``A^T 1``).
        x0: start [..., H, W] (zeros when None).
        unit: the image's intensity unit (e.g. ``mu_water * pixel_mm`` for attenuation per pixel);
            None: `intensity_unit` of the data.

    Returns: float [..., H, W].
    """
    if lam < 0:
        raise ValueError(f"tv_pdhg: lam must be >= 0, got {lam}")
    if unit is not None and not (math.isfinite(unit) and unit > 0):
        raise ValueError(f"tv_pdhg: unit must be a positive intensity, got {unit}")
    A.check_range(y, "sinogram")
    with torch.no_grad():
        if unit is None:
            unit = intensity_unit(y, A)
        dev, dt = y.device, y.dtype
        row = A.forward(torch.ones(A.domain_shape, device=dev, dtype=dt))     # A 1  [A, D]
        col = A.adjoint(torch.ones(A.range_shape, device=dev, dtype=dt))      # A^T 1 [H, W]
        c = float(col.mean()) / 4.0
        sigma_p = torch.where(row > 1e-6 * row.max(), 1.0 / row.clamp_min(1e-30), torch.zeros_like(row))
        sigma_q = 1.0 / (2.0 * c)
        tau = 1.0 / (col.clamp_min(0.0) + 4.0 * c)
        radius = max(lam * unit / c, 1e-30)
        lead = y.shape[:-2]
        x = torch.zeros(*lead, *A.domain_shape, dtype=dt, device=dev) if x0 is None else x0.detach().clone()
        x_bar = x.clone()
        p = torch.zeros_like(y)
        q = torch.zeros(*x.shape[:-2], 2, *x.shape[-2:], dtype=x.dtype, device=x.device)
        for _ in range(n_iter):
            # dual step: data term f(z) = 1/2 ||z - y||^2, prox of f* in closed form (per-bin step)
            p = (p + sigma_p * (A.forward(x_bar) - y)) / (1.0 + sigma_p)
            # dual step: TV, projection onto the pointwise l2 ball of radius lam * unit / c
            q = q + sigma_q * c * gradient(x_bar)
            q = q / (q.norm(dim=-3, keepdim=True) / radius).clamp_min(1.0)
            # primal step (per-pixel step)
            x_new = x - tau * (A.adjoint(p) - c * divergence(q))
            if nonneg:
                x_new = x_new.clamp_min(0.0)
            x_bar = 2 * x_new - x
            x = x_new
        return x


# ---------------------------------------------------------------------------
# baselines: fn(A, y, **hp) -> Posterior
# ---------------------------------------------------------------------------
@register("sirt", modality="ct", defaults={"n_iter": 100, "nonneg": True}, weighted=True)
def sirt_reconstruction(A: LinearOperator, y: torch.Tensor, n_iter: int = 50, nonneg: bool = False) -> Posterior:
    """`sirt` as a `Posterior`: real ``mean`` [..., *domain_shape] from ``y`` [..., *range_shape]."""
    t0 = time.perf_counter()
    x = sirt(y, A, n_iter=n_iter, nonneg=nonneg)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="sirt",
                     hparams={"n_iter": n_iter, "nonneg": nonneg})


def cgls_reconstruction(A: LinearOperator, y: torch.Tensor, n_iter: int = 20) -> Posterior:
    """`cgls` as a `Posterior`: real ``mean`` [..., *domain_shape] from ``y`` [..., *range_shape]."""
    t0 = time.perf_counter()
    x = cgls(y, A, n_iter=n_iter)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="cgls", hparams={"n_iter": n_iter})


@register("tv", modality="ct", weighted=True)
def tv_reconstruction(A: LinearOperator, y: torch.Tensor, lam: float = DEFAULT_LAM_TV, n_iter: int = 300,
                      nonneg: bool = True, op_norm: float | None = None, unit: float | None = None) -> Posterior:
    """`tv_pdhg` as a `Posterior`: real ``mean`` [..., H, W] from ``y`` [..., n_angles, n_detectors]; the
    ``unit`` used (given or `intensity_unit` of the data) is recorded in ``hparams``."""
    t0 = time.perf_counter()
    if unit is None:
        unit = intensity_unit(y, A)
    x = tv_pdhg(y, A, lam, n_iter, nonneg, op_norm, unit=unit)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="tv-pdhg",
                     hparams={"lam": lam, "unit": unit, "n_iter": n_iter, "nonneg": nonneg})
