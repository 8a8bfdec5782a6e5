"""Classical non-Cartesian reconstructions: density-compensated gridding and CG-SENSE.

Pruessmann KP, Weiger M, Boernert P, Boesiger P. "Advances in sensitivity encoding with
arbitrary k-space trajectories." Magn Reson Med 2001;46:638-651.
"""
from __future__ import annotations

import torch

from operators.linalg import conjugate_gradient
from operators.nufft import NonCartesianMRI


def gridding(y: torch.Tensor, A: NonCartesianMRI, dcf: torch.Tensor) -> torch.Tensor:
    """Density-compensated adjoint ``A^H (w * y)``, coil-combined with the maps' conjugates.

    Args:
        y: complex ``[..., C, K]`` samples (``[..., K]`` single coil).
        A: the acquisition's operator.
        dcf: real ``[K]`` weights, e.g. `operators.dcf.pipe_menon_dcf` (Cartesian-normalised,
            so the result keeps the image scale).

    Returns: complex ``[..., H, W]``.
    """
    if dcf.shape != (A.range_shape[-1],):
        raise ValueError(f"gridding: dcf of shape {tuple(dcf.shape)} does not match the {A.range_shape[-1]} samples")
    return A.adjoint(y * dcf.to(y.device))


def cg_sense(
    y: torch.Tensor,
    A: NonCartesianMRI,
    n_iter: int = 30,
    lam: float = 0.0,
    x0: torch.Tensor | None = None,
    tol: float = 0.0,
) -> torch.Tensor:
    """CG-SENSE: solve ``(A^H A + lam I) x = A^H y`` by conjugate gradients.

    Each iteration costs one ``A.normal`` (two FFTs per coil with the Toeplitz kernel).
    ``lam`` is a Tikhonov weight in the units of ``A^H A`` (whose largest eigenvalue is
    about the number of k-space samples per Cartesian cell at the centre of k-space).

    Args:
        y: complex ``[..., C, K]`` samples; leading dimensions are solved independently.
        A: the acquisition's operator.
        n_iter: CG iterations.
        lam: Tikhonov regularisation (>= 0).
        x0: starting image ``[..., H, W]`` (zeros when None).
        tol: relative residual at which CG stops early.

    Returns: complex ``[..., H, W]``.
    """
    if lam < 0:
        raise ValueError(f"cg_sense: lam must be >= 0, got {lam}")
    rhs = A.adjoint(y)
    normal = A.normal if lam == 0 else (lambda x: A.normal(x) + lam * x)
    return conjugate_gradient(normal, rhs, x0=x0, n_iter=n_iter, tol=tol, dims=len(A.domain_shape))
