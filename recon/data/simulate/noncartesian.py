"""Simulated multi-coil non-Cartesian acquisitions, for tests and benchmarks.

``simulate_noncartesian`` turns a magnitude (or complex) image into samples on a
trajectory: it multiplies a smooth random phase, applies `NonCartesianMRI` with
birdcage (or given) coil maps, and adds complex Gaussian noise. Coil maps and phase
come from `recon.data.simulate.mri`, as for Cartesian simulations; all randomness comes
from the ``seed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from operators.nufft import NonCartesianMRI

from .mri import birdcage_maps, smooth_phase


@dataclass
class NonCartesianSimulation:
    """One simulated acquisition.

    Attributes:
        samples: complex64 ``[C, K]`` noisy samples (``[K]`` for one coil).
        image: complex64 ``[H, W]`` ground truth, with its phase (what a recon should return).
        maps: complex64 ``[C, H, W]`` coil maps used (None for one coil).
        trajectory: real ``[2, K]`` radians per voxel.
        op: the `NonCartesianMRI` that produced the noiseless samples.
        noise_std: standard deviation of the complex noise per sample (``E|n|^2 = noise_std^2``).
    """

    samples: torch.Tensor
    image: torch.Tensor
    maps: torch.Tensor | None
    trajectory: torch.Tensor
    op: NonCartesianMRI
    noise_std: float


def simulate_noncartesian(
    image: torch.Tensor,
    trajectory: torch.Tensor,
    n_coils: int = 8,
    maps: torch.Tensor | None = None,
    max_phase: float = math.pi / 2,
    noise_std: float = 0.0,
    seed: int = 0,
    toeplitz: bool = True,
) -> NonCartesianSimulation:
    """Simulate noisy multi-coil samples of ``image`` on ``trajectory``.

    Args:
        image: real or complex ``[H, W]``; a real image gets a smooth random phase
            (``|phase| <= max_phase`` radians; 0 disables it), a complex one is used as is.
        trajectory: real ``[2, K]`` radians per voxel in ``[-pi, pi)``.
        n_coils: number of `birdcage_maps` coils (unit root-sum-of-squares) when ``maps`` is None;
            ``n_coils = 0`` simulates a single coil (samples ``[K]``).
        maps: complex ``[C, H, W]`` to use instead of synthetic ones.
        noise_std: std of the complex Gaussian noise per sample (real and imaginary
            parts each ``noise_std / sqrt(2)``), in the units of `NonCartesianMRI`
            (whose scaling matches ``fft2c``).
        seed: seeds the phase and the noise.
        toeplitz: build the returned operator with its Toeplitz kernel.
    """
    if image.dim() != 2:
        raise ValueError(f"simulate_noncartesian: image must be [H, W], got {tuple(image.shape)}")
    shape = (image.shape[0], image.shape[1])
    gen = torch.Generator().manual_seed(seed)
    if image.is_complex():
        truth = image.to(torch.complex64)
    else:
        phase = smooth_phase(shape, gen, amplitude=max_phase) if max_phase else torch.zeros(shape)
        truth = image.to(torch.complex64) * torch.exp(1j * phase.to(image.device))
    if maps is None and n_coils > 0:
        maps = birdcage_maps(n_coils, shape).to(image.device)
    op = NonCartesianMRI(maps, trajectory.to(image.device), toeplitz=toeplitz, image_shape=shape)
    clean = op(truth)
    noise = torch.randn(clean.shape, dtype=torch.complex64, generator=gen, device=gen.device).to(clean.device) * noise_std
    return NonCartesianSimulation(clean + noise, truth, maps, op.trajectory, op, noise_std)
