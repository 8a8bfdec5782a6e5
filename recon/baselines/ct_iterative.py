"""Iterative CT baselines: TV-regularised reconstruction (Chambolle-Pock) and `Posterior` wrappers for FBP/SIRT/CGLS.

TV reconstruction solves

    min_{x >= 0}  1/2 ||A x - y||^2 + lam * TV(x),     TV(x) = sum_pixels |grad x|_2 (isotropic)

with the primal-dual hybrid gradient of Chambolle & Pock (2011) on ``K = [A; c grad]``: the
gradient is scaled by ``c = ||A|| / sqrt(8)`` (and the TV dual ball shrunk to ``lam / c``) so both
blocks have the same norm (the forward-difference gradient's is below sqrt(8)); then
``||K||^2 <= 2 ||A||^2`` and ``sigma = tau = 1 / ||K||``. ``||A||`` comes from `operators.base.power_iteration`. Leading dimensions are
independent slices. ``lam`` is in the units of the image (the sinogram's line integrals divided by
pixel length); the default was chosen on validation slices 72..83 (see ``benchmarks/RESULTS.md``).

References:
    Chambolle A, Pock T. "A first-order primal-dual algorithm for convex problems with applications
    to imaging." J Math Imaging Vis 2011;40:120-145.
    Sidky EY, Jorgensen JH, Pan X. "Convex optimization problem prototyping for image reconstruction
    in computed tomography with the Chambolle-Pock algorithm." Phys Med Biol 2012;57:3065-3091.
"""
from __future__ import annotations

import math
import time

import torch

from operators.base import LinearOperator, power_iteration
from recon.baselines.ct import cgls, fbp, sirt
from solvers.posterior import Posterior

#: validation-chosen TV weight for images in water units (water = 1), 60-view parallel beam
DEFAULT_LAM_TV = 3.0


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


def tv_pdhg(sinogram: torch.Tensor, operator: LinearOperator, lam: float = DEFAULT_LAM_TV, n_iter: int = 100,
            nonneg: bool = True, op_norm: float | None = None, x0: torch.Tensor | None = None) -> torch.Tensor:
    """TV-regularised least squares by Chambolle-Pock; see the module docstring.

    Args:
        sinogram: float [..., n_angles, n_detectors].
        operator: a real 2D CT operator (`ParallelBeam2D`, `FanBeam2D`).
        lam: TV weight (>= 0).
        n_iter: PDHG iterations (one forward and one back projection each).
        nonneg: constrain x >= 0.
        op_norm: ``||A||`` if known (saves a power iteration).
        x0: start [..., H, W] (zeros when None).

    Returns: float [..., H, W].
    """
    if lam < 0:
        raise ValueError(f"tv_pdhg: lam must be >= 0, got {lam}")
    operator.check_range(sinogram, "sinogram")
    with torch.no_grad():
        if op_norm is None:
            op_norm = power_iteration(operator, n_iter=20, device=sinogram.device,
                                      generator=torch.Generator().manual_seed(0))
        c = op_norm / math.sqrt(8.0)
        step = 1.0 / (math.sqrt(2.0) * op_norm)
        radius = max(lam / c, 1e-30)
        lead = sinogram.shape[:-2]
        x = torch.zeros(*lead, *operator.domain_shape, dtype=sinogram.dtype, device=sinogram.device) \
            if x0 is None else x0.detach().clone()
        x_bar = x.clone()
        p = torch.zeros_like(sinogram)
        q = torch.zeros(*x.shape[:-2], 2, *x.shape[-2:], dtype=x.dtype, device=x.device)
        for _ in range(n_iter):
            # dual step: data term f(z) = 1/2 ||z - y||^2, prox of f* in closed form
            p = (p + step * (operator.forward(x_bar) - sinogram)) / (1.0 + step)
            # dual step: TV, projection onto the pointwise l2 ball of radius lam
            q = q + step * c * gradient(x_bar)
            q = q / (q.norm(dim=-3, keepdim=True) / radius).clamp_min(1.0)
            # primal step
            x_new = x - step * (operator.adjoint(p) - c * divergence(q))
            if nonneg:
                x_new = x_new.clamp_min(0.0)
            x_bar = 2 * x_new - x
            x = x_new
        return x


def tv_reconstruction(sinogram: torch.Tensor, operator: LinearOperator, lam: float = DEFAULT_LAM_TV,
                      n_iter: int = 100, nonneg: bool = True, op_norm: float | None = None) -> Posterior:
    """`tv_pdhg` as a `Posterior` (real ``mean`` [..., H, W])."""
    t0 = time.perf_counter()
    x = tv_pdhg(sinogram, operator, lam, n_iter, nonneg, op_norm)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="tv-pdhg",
                     hparams={"lam": lam, "n_iter": n_iter, "nonneg": nonneg})


def fbp_reconstruction(sinogram: torch.Tensor, operator, filter: str = "ram-lak") -> Posterior:
    """`recon.baselines.ct.fbp` as a `Posterior`."""
    t0 = time.perf_counter()
    x = fbp(sinogram, operator, filter=filter)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="fbp", hparams={"filter": filter})


def sirt_reconstruction(sinogram: torch.Tensor, operator: LinearOperator, n_iter: int = 100,
                        nonneg: bool = True) -> Posterior:
    """`recon.baselines.ct.sirt` as a `Posterior`."""
    t0 = time.perf_counter()
    x = sirt(sinogram, operator, n_iter=n_iter, nonneg=nonneg)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="sirt",
                     hparams={"n_iter": n_iter, "nonneg": nonneg})


def cgls_reconstruction(sinogram: torch.Tensor, operator: LinearOperator, n_iter: int = 20) -> Posterior:
    """`recon.baselines.ct.cgls` as a `Posterior`."""
    t0 = time.perf_counter()
    x = cgls(sinogram, operator, n_iter=n_iter)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="cgls", hparams={"n_iter": n_iter})
