"""Centred orthonormal 2D FFTs (the fastMRI convention) and coil combinations."""
from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred 2D FFT over the last two axes: ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

    x: complex [..., H, W] -> complex [..., H, W].
    """
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred inverse 2D FFT, the exact adjoint (and inverse) of `fft2c`."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis. complex/real [..., C, H, W] -> real [..., H, W]."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim))


def sense_combine(coil_images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """SENSE (adjoint-of-maps) coil combination ``sum_c conj(S_c) x_c``.

    coil_images: complex [..., C, H, W]; maps: complex [C, H, W] or [M, C, H, W].
    Returns [..., H, W] for one map set and [..., M, H, W] for M sets.
    """
    if maps.dim() == 3:
        return (maps.conj() * coil_images).sum(-3)
    return (maps.conj() * coil_images.unsqueeze(-4)).sum(-3)
