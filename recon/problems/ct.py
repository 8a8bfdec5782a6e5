"""From a CT slice (HU image or measured sinogram) to a reconstruction problem.

Statistical weights for Poisson data: with ``I0`` incident photons per bin, the post-log measurement
``p = ln(I0 / N)`` has variance ``~ 1 / N`` with ``N = I0 exp(-p)`` the detected counts, so the bins
through dense bone (few counts) are far noisier than those through soft tissue or air. `CTProblem.data_op`
and `CTProblem.data_y` are the whitened pair ``(W^{1/2} A, W^{1/2} y)`` with ``W = N / mean(N)`` (weights
normalised to mean 1, so the data keep their scale and the methods' hyper-parameters keep their meaning);
the noise of the whitened data then has the same std ``sigma_y = 1 / sqrt(mean(N))`` in every bin, and
every solver and baseline that takes an operator solves the weighted (penalised) least-squares problem
without knowing about weights (Sauer & Bouman 1993; Fessler 1994, "Penalized weighted least-squares image
reconstruction for positron emission tomography", IEEE TMI 13:290).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from operators.base import LinearOperator
from operators.ct import FanBeam2D, ParallelBeam2D, limited_angle, sparse_view_angles
from operators.weighted import WeightedOperator
from recon.data.simulate.ct import MU_WATER_PER_MM, ct_sinogram, mu_to_hu

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
        mu_water: attenuation of water per mm.
        I0: incident photons per bin when the data are Poisson counts after the log, else None
            (noiseless or unknown statistics: no weights).
    """

    y: torch.Tensor
    op: ParallelBeam2D | FanBeam2D
    pixel_mm: float
    reference_hu: torch.Tensor | None = None
    mu_water: float = MU_WATER_PER_MM
    I0: float | None = None

    def __post_init__(self) -> None:
        if self.I0 is not None and not (math.isfinite(self.I0) and self.I0 > 0):
            raise ValueError(f"CTProblem: I0 must be a positive number of incident photons or None, got {self.I0!r}")

    @property
    def counts(self) -> torch.Tensor | None:
        """Detected counts ``N = I0 exp(-y)`` (at least 1, as simulated), float32 [views, detectors]; None without I0."""
        if self.I0 is None:
            return None
        return (float(self.I0) * torch.exp(-self.y.double())).clamp_min(1.0).to(torch.float32)

    @property
    def weights(self) -> torch.Tensor | None:
        """Statistical weights ``W = N / mean(N)`` (inverse variance, mean 1), float32 [views, detectors], or None."""
        n = self.counts
        return None if n is None else n / n.mean()

    @property
    def sigma_y(self) -> float:
        """Noise std per bin of `data_y` (line-integral units): ``1 / sqrt(mean(N))``; 0.0 without I0."""
        n = self.counts
        return 0.0 if n is None else float(n.double().mean().rsqrt())

    @property
    def data_op(self) -> LinearOperator:
        """The operator every iterative method should fit: ``W^{1/2} A`` with Poisson weights, else `op`."""
        w = self.weights
        return self.op if w is None else WeightedOperator(self.op, w.sqrt())

    @property
    def data_y(self) -> torch.Tensor:
        """The measurement matching `data_op`: ``W^{1/2} y`` with Poisson weights, else `y`."""
        w = self.weights
        return self.y if w is None else w.sqrt() * self.y

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
    return CTProblem(y.to(device), op, pixel_mm, hu_t.to(device), I0=spec.I0)


def metric_image(hu: np.ndarray) -> np.ndarray:
    """HU clipped to `HU_WINDOW` and shifted to [0, HU_RANGE] (non-negative, for fastMRI-style metrics)."""
    return np.clip(hu, *HU_WINDOW) - HU_WINDOW[0]
