"""From a CT slice (HU image or measured sinogram) to a reconstruction problem."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from operators.ct import FanBeam2D, ParallelBeam2D, limited_angle, sparse_view_angles
from recon.simulate.ct import MU_WATER_PER_MM, ct_sinogram, mu_to_hu

HU_WINDOW = (-1024.0, 2000.0)   # metrics: HU clipped to this window, shifted to start at 0
HU_RANGE = HU_WINDOW[1] - HU_WINDOW[0]


@dataclass(frozen=True)
class CTSpec:
    """How to simulate measurements from HU images: parallel beam, `views` over `arc_degrees`, optional dose."""

    views: int = 60
    arc_degrees: float = 180.0
    I0: float | None = None
    seed: int = 0

    def angles(self) -> np.ndarray:
        if self.arc_degrees >= 180.0:
            return sparse_view_angles(self.views, math.radians(self.arc_degrees))
        return limited_angle(self.arc_degrees, self.views)


@dataclass
class CTProblem:
    """One CT slice, ready for any method.

    Attributes:
        y: sinogram float32 [views, detectors] (line integrals).
        op: the projector (image in attenuation per pixel -> line integrals).
        pixel_mm: reconstruction pixel size.
        reference_hu: float32 [H, W] HU, or None (measured sinograms).
    """

    y: torch.Tensor
    op: ParallelBeam2D | FanBeam2D
    pixel_mm: float
    reference_hu: torch.Tensor | None = None
    mu_water: float = MU_WATER_PER_MM

    @property
    def scale(self) -> float:
        """Data (attenuation per pixel) = scale * prior image ((HU + 1000) / 1000)."""
        return self.mu_water * self.pixel_mm

    def to_hu(self, mu_image: torch.Tensor) -> torch.Tensor:
        return mu_to_hu(mu_image, self.pixel_mm, self.mu_water)

    @property
    def crop(self) -> tuple[int, int]:
        return tuple(self.op.domain_shape)  # type: ignore[return-value]


def simulated_ct_problem(hu: np.ndarray | torch.Tensor, pixel_mm: float, spec: CTSpec, device: str = "cpu") -> CTProblem:
    """Parallel-beam measurements of an HU slice [H, W]: `spec.views` angles, ceil(sqrt(2) max(H, W)) bins."""
    hu_t = torch.as_tensor(np.asarray(hu), dtype=torch.float32)
    h, w = hu_t.shape
    op = ParallelBeam2D((h, w), spec.angles(), int(math.ceil(math.sqrt(2) * max(h, w))))
    gen = torch.Generator().manual_seed(spec.seed)
    y = ct_sinogram(hu_t, op, I0=spec.I0, pixel_size_mm=pixel_mm, generator=gen)
    return CTProblem(y.to(device), op, pixel_mm, hu_t.to(device))


def metric_image(hu: np.ndarray) -> np.ndarray:
    """HU clipped to `HU_WINDOW` and shifted to [0, HU_RANGE] (non-negative, for fastMRI-style metrics)."""
    return np.clip(hu, *HU_WINDOW) - HU_WINDOW[0]
