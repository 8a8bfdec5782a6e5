"""NLINV: joint estimation of image and coil sensitivities by regularised nonlinear inversion.

Uecker M, Hohage T, Block KT, Frahm J. "Image reconstruction by regularized nonlinear inversion -
joint estimation of coil sensitivities and image content." MRM 2008;60:674-682.

Unknowns ``x = (rho, c_hat)``: the image rho [H, W] and the coils in weighted k-space c_hat [C, H, W],
``c_j = F^-1 (w * c_hat_j)`` with the Sobolev weight ``w(k) = (1 + a |k|^2)^(-b/2)`` (k in cycles per
field of view over the matrix size, a = 220, b = 32) that keeps the coils smooth. The model
``G(x)_j = M F (rho * c_j)`` is solved by the iteratively regularised Gauss-Newton method:

    x_{n+1} = x_n + h,   (DG^H DG + alpha_n I) h = DG^H (y - G(x_n)) - alpha_n x_n,   alpha_n = alpha_0 / q^n

with the inner system solved by conjugate gradients (relative tolerance 0.1), starting from rho = 1
and c_hat = 0, on data scaled to norm 100; the defaults (8 steps, alpha_0 = 1, q = 2) are those of
BART ``nlinv``. The result is normalised as BART does: maps ``c / rss(c)``, image ``rho * rss(c)``.
Because the coils are estimated from all samples, not from the fully sampled centre alone, NLINV
needs only a few centre lines.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fft import fft2c, ifft2c, rss
from .linalg import conjugate_gradient


class NlinvError(ValueError):
    """Input NLINV cannot work with."""


@dataclass
class NlinvResult:
    """What `nlinv` returns.

    Attributes:
        image: complex64 [H, W], ``rho * rss(c)`` in the units of the input k-space.
        maps: complex64 [C, H, W], ``c / rss(c)`` (``sum_c |maps_c|^2 = 1`` everywhere).
        residual: relative data residual ``||y - G(x)|| / ||y||`` after the last step.
    """

    image: torch.Tensor
    maps: torch.Tensor
    residual: float


def sobolev_weights(shape: tuple[int, int], a: float = 220.0, b: float = 32.0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1 + a |k|^2)^(-b/2)`` on the centred k-space grid, ``k = (i - n//2) / n``. float32 [H, W]."""
    ky = (torch.arange(shape[0], device=device) - shape[0] // 2) / shape[0]
    kx = (torch.arange(shape[1], device=device) - shape[1] // 2) / shape[1]
    return (1 + a * (ky[:, None] ** 2 + kx[None, :] ** 2)) ** (-b / 2)


class _Model:
    """``G(rho, c_hat) = M F (rho * F^-1(w c_hat))`` and its derivative at a point; x packs [1 + C, H, W]."""

    def __init__(self, mask: torch.Tensor, weights: torch.Tensor):
        self.mask, self.w = mask, weights

    def coils(self, c_hat: torch.Tensor) -> torch.Tensor:
        return ifft2c(self.w * c_hat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * fft2c(x[:1] * self.coils(x[1:]))

    def linearise(self, x: torch.Tensor):
        rho, c = x[:1], self.coils(x[1:])

        def der(dx: torch.Tensor) -> torch.Tensor:
            return self.mask * fft2c(dx[:1] * c + rho * self.coils(dx[1:]))

        def adj(r: torch.Tensor) -> torch.Tensor:
            z = ifft2c(self.mask * r)
            d_rho = (c.conj() * z).sum(0, keepdim=True)
            d_chat = self.w * fft2c(rho.conj() * z)
            return torch.cat([d_rho, d_chat])

        return der, adj


def nlinv(y: torch.Tensor, mask: torch.Tensor | None = None, n_iter: int = 8, alpha: float = 1.0,
          reduction: float = 2.0, cg_iter: int = 100, cg_tol: float = 0.1) -> NlinvResult:
    """Joint image and coil estimation from undersampled multi-coil k-space.

    Args:
        y: complex [C, H, W] centred k-space, zero where not sampled.
        mask: real [W] or [H, W] sampling pattern; None = where any coil is non-zero.
        n_iter: Gauss-Newton steps. alpha: initial regularisation. reduction: alpha is divided by it each step.
        cg_iter, cg_tol: inner conjugate-gradient iterations and relative tolerance.

    Returns: `NlinvResult` on the input's device.
    """
    if y.dim() != 3 or not y.is_complex():
        raise NlinvError(f"nlinv: expected complex k-space [C, H, W], got {tuple(y.shape)} {y.dtype}")
    if not bool(torch.isfinite(torch.view_as_real(y)).all()):
        raise NlinvError("nlinv: k-space contains NaN or Inf")
    if mask is None:
        mask = (y.abs().sum(0) > 0).float()
    mask = mask.to(y.device, torch.float32)
    mask = mask.expand(y.shape[-2:]) if mask.dim() == 1 else mask
    norm = float(y.abs().pow(2).sum().sqrt())
    if norm == 0:
        raise NlinvError("nlinv: k-space is all zero")
    scale = 100.0 / norm
    y = (y * scale).to(torch.complex64)
    model = _Model(mask, sobolev_weights(tuple(y.shape[-2:]), device=y.device))
    x = torch.zeros(1 + y.shape[0], *y.shape[-2:], dtype=torch.complex64, device=y.device)
    x[0] = 1
    for n in range(n_iter):
        a = alpha / reduction**n
        der, adj = model.linearise(x)
        rhs = adj(y - model.forward(x)) - a * x
        h = conjugate_gradient(lambda v: adj(der(v)) + a * v, rhs, n_iter=cg_iter, tol=cg_tol, dims=3)
        x = x + h
    residual = float((y - model.forward(x)).abs().pow(2).sum().sqrt() / 100.0)
    c = model.coils(x[1:])
    norm_c = rss(c).clamp_min(1e-12)
    return NlinvResult(image=(x[0] * norm_c / scale).to(torch.complex64), maps=(c / norm_c).to(torch.complex64),
                       residual=residual)
