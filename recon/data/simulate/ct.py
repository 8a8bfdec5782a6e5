"""CT measurement simulation: Hounsfield units -> attenuation -> line integrals (+ Poisson photon noise).

Attenuation scale
-----------------
``mu = MU_WATER_PER_MM * (1 + HU / 1000)``, clipped at 0 (air), with
``MU_WATER_PER_MM = 0.0192`` per mm, the linear attenuation of water at about
70 keV (the effective energy of a 120 kVp spectrum). The CT operators of
`operators.ct` measure lengths in pixels, so the image they act on is the
attenuation *per pixel*, ``mu * pixel_size_mm``; their output is then the
dimensionless line integral ``p = -ln(I / I0)``. Water at 0.957 mm pixels is
0.01837 per pixel; 256 pixels of water give p of about 4.7.

Noise model (``I0`` given): detected counts ``N ~ Poisson(I0 exp(-p))``, counts
below 1 set to 1 (photon starvation), then ``p_noisy = ln(I0 / N)``. For large
counts ``Var(p_noisy) ~ 1 / (I0 exp(-p))``.
"""
from __future__ import annotations

import numpy as np
import torch

from operators.base import LinearOperator

#: linear attenuation coefficient of water, 1/mm, at about 70 keV
MU_WATER_PER_MM = 0.0192


def hu_to_mu(hu: torch.Tensor | np.ndarray, pixel_size_mm: float = 1.0,
             mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """HU -> attenuation per pixel ``max(mu_water (1 + HU/1000), 0) * pixel_size_mm``.

    hu: any real array ``[...]``; returns float32 ``[...]`` on the input's device (CPU for numpy input).
    """
    hu_t = torch.as_tensor(hu).to(torch.float32)
    return (mu_water * pixel_size_mm) * (1.0 + hu_t / 1000.0).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor | np.ndarray, pixel_size_mm: float = 1.0,
             mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Attenuation per pixel -> HU ``1000 (mu / (mu_water pixel_size_mm) - 1)``; inverse of `hu_to_mu` above -1000 HU.

    mu: real ``[...]``; returns float32 ``[...]``.
    """
    mu_t = torch.as_tensor(mu).to(torch.float32)
    return 1000.0 * (mu_t / (mu_water * pixel_size_mm) - 1.0)


def ct_sinogram(volume_hu: torch.Tensor | np.ndarray, operator: LinearOperator, I0: float | None = None, *,
                pixel_size_mm: float = 1.0, mu_water: float = MU_WATER_PER_MM,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Simulate measured line integrals of a HU image or volume.

    Args:
        volume_hu: HU, ``[..., H, W]`` matching ``operator.domain_shape`` (numpy or torch; its device is kept).
        operator: a CT operator (`operators.ct.ParallelBeam2D`, `FanBeam2D`, ...), lengths in pixels.
        I0: incident photons per detector bin; None gives the noiseless line integrals.
        pixel_size_mm: pixel width of ``volume_hu`` in mm (e.g. ``spacing_mm_xyz[0]``).
        mu_water: attenuation of water per mm.
        generator: torch generator for the Poisson draw (on the volume's device); None uses the global RNG.

    Returns:
        float32 ``[..., n_angles, n_detectors]``: ``p = A mu`` (noiseless) or ``ln(I0 / N)`` with
        ``N ~ Poisson(I0 exp(-p))`` clamped to >= 1.
    """
    if I0 is not None and not (np.isfinite(I0) and I0 > 0):
        raise ValueError(f"I0 must be a positive number of incident photons, got {I0!r}")
    mu = hu_to_mu(volume_hu, pixel_size_mm, mu_water)
    with torch.no_grad():
        p = operator.forward(mu)
        if I0 is None:
            return p
        expected = float(I0) * torch.exp(-p.to(torch.float64))
        counts = torch.poisson(expected, generator=generator).clamp_min(1.0)
        return torch.log(float(I0) / counts).to(torch.float32)
