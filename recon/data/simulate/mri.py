"""Simulated multi-coil Cartesian k-space from an image (for tests, the demo sample and benchmarks)."""
from __future__ import annotations

import numpy as np
import sigpy.mri
import torch

from operators.fft import fft2c


def birdcage_maps(n_coils: int, shape: tuple[int, int], radius: float = 1.5) -> torch.Tensor:
    """Birdcage coil sensitivities (sigpy.mri.birdcage_maps), normalised so that sum_c |S_c|^2 = 1.

    Returns complex64 [C, H, W].
    """
    mps = sigpy.mri.birdcage_maps((n_coils, *shape), r=radius).astype(np.complex64)
    mps /= np.sqrt((np.abs(mps) ** 2).sum(0, keepdims=True))
    return torch.from_numpy(mps)


def smooth_phase(shape: tuple[int, int], generator: torch.Generator, max_order: int = 3, amplitude: float = np.pi / 2) -> torch.Tensor:
    """A smooth random phase map: random low-order 2D polynomial, peak |phase| <= amplitude. float32 [H, W]."""
    h, w = shape
    y = torch.linspace(-1, 1, h)[:, None]
    x = torch.linspace(-1, 1, w)[None, :]
    phase = torch.zeros(h, w)
    for i in range(max_order + 1):
        for j in range(max_order + 1 - i):
            phase = phase + torch.randn((), generator=generator, device=generator.device).item() * y**i * x**j
    return amplitude * phase / phase.abs().max().clamp_min(1e-6)


def simulate_multicoil(
    image: torch.Tensor,
    n_coils: int = 8,
    maps: torch.Tensor | None = None,
    noise_std: float = 0.0,
    add_phase: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fully sampled multi-coil k-space ``F(S_c x) + noise``.

    Args:
        image: real or complex [..., H, W] (a magnitude image gets a smooth random phase when `add_phase`).
        n_coils: number of birdcage coils (ignored when `maps` is given).
        maps: complex [C, H, W] sensitivities; default birdcage maps.
        noise_std: std of the complex Gaussian noise in each of the real and imaginary parts, relative to
            the maximum magnitude of the image.
        seed: seed for the phase and the noise.

    Returns:
        (kspace complex64 [..., C, H, W], maps complex64 [C, H, W], the complex image [..., H, W]).
    """
    g = torch.Generator().manual_seed(seed)
    x = image.to(torch.complex64)
    if add_phase and not image.is_complex():
        x = x * torch.exp(1j * smooth_phase(tuple(image.shape[-2:]), g))
    if maps is None:
        maps = birdcage_maps(n_coils, tuple(image.shape[-2:]))
    k = fft2c(maps * x.unsqueeze(-3))
    if noise_std > 0:
        scale = noise_std * float(x.abs().max())
        k = k + scale * torch.complex(torch.randn(k.shape, generator=g, device=g.device), torch.randn(k.shape, generator=g, device=g.device)).to(k.device)
    return k.to(torch.complex64), maps.to(torch.complex64), x
