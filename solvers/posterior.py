"""`Posterior`: what every solver and baseline returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import torch

INTERVAL_FLOOR = 0.1    # interval half-width = lam * (std + INTERVAL_FLOOR * mean std over the object)
OBJECT_LEVEL = 0.1      # object pixels: at least OBJECT_LEVEL of the slice maximum


def object_mask(image: torch.Tensor) -> torch.Tensor:
    """bool [..., H, W]: pixels whose |value| is at least OBJECT_LEVEL of their slice's maximum."""
    mag = image.abs()
    peak = mag.flatten(-2).amax(-1)[..., None, None]
    return mag >= OBJECT_LEVEL * peak


def widened_std(values: torch.Tensor, std: torch.Tensor, floor: float = INTERVAL_FLOOR) -> torch.Tensor:
    """``std + floor * (mean std over the object of values)``, per slice, [..., H, W]: pixels whose
    samples agree keep a non-zero interval."""
    obj = object_mask(values).to(std.dtype)
    per_slice = (std * obj).flatten(-2).sum(-1) / obj.flatten(-2).sum(-1).clamp_min(1.0)
    return std + floor * per_slice[..., None, None]


def interval_bounds(values: torch.Tensor, std: torch.Tensor, lam: float, magnitude: bool,
                    floor: float = INTERVAL_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """``values -/+ lam * widened_std(values, std, floor)``; magnitudes clip the lower end at 0."""
    half = lam * widened_std(values, std, floor)
    lower = values - half
    return (lower.clamp_min(0.0) if magnitude else lower), values + half


@dataclass
class Posterior:
    """The result of a reconstruction.

    Attributes:
        mean: posterior mean (or the baseline's estimate), [..., H, W] in the data's scale,
            complex for complex operators, real for real ones.
        std: per-voxel standard deviation of the samples, real [..., H, W]: of the *magnitude* for complex
            images (MRI), of the values themselves for real images (CT, where the sign carries information);
            None for methods that return one estimate (baselines).
        samples: the N posterior samples [N, ..., H, W], or None.
        nfe: network evaluations made (0 for classical methods).
        wall_time: seconds spent.
        network_time: seconds spent inside the prior's network (part of `wall_time`).
        method: the method's name.
        hparams: the hyper-parameters used.
        fit: a per-run statistic of how typical the data are for the method, where the method computes one itself
            (the U-Net: `recon.baselines.unet.data_misfit`); the samplers' (the prior's score norm of the samples)
            is computed by `recon.methods.prior_fit`. None otherwise.
    """

    mean: torch.Tensor
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    nfe: int = 0
    wall_time: float = 0.0
    network_time: float = 0.0
    method: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)
    fit: float | None = None

    @classmethod
    def from_samples(cls, samples: torch.Tensor, **kw: Any) -> "Posterior":
        """Mean over the first axis; std over the first axis (N-1 normalised when N > 1) of the magnitude
        for complex samples, of the values for real ones."""
        mean = samples.mean(0)
        values = samples.abs() if samples.is_complex() else samples
        std = values.std(0) if samples.shape[0] > 1 else torch.zeros(values.shape[1:], dtype=values.dtype,
                                                                    device=samples.device)
        return cls(mean=mean, std=std, samples=samples, **kw)

    @property
    def magnitude(self) -> torch.Tensor:
        """|mean|, real [..., H, W]."""
        return self.mean.abs()

    def interval(self, alpha: float = 0.05, lam: float | None = None,
                 floor: float = INTERVAL_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel interval (lower, upper), real [..., H, W]: on the magnitude for complex images, on the values
        for real ones; ``centre -/+ lam * (std + floor * mean object std)``.

        lam None: the Gaussian quantile for `alpha` (1.96 at 0.05), which is *not* calibrated (sampler stds are
        often too small); pass a calibrated lam and the floor it was fitted with (`recon.intervals`: an entry's
        ``lam`` and ``floor``, fitted on validation data) for a guarantee.
        """
        if self.std is None:
            raise ValueError(f"{self.method or 'this method'} returned no std: it has no interval")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        lam = NormalDist().inv_cdf(1 - alpha / 2) if lam is None else float(lam)
        complex_image = self.mean.is_complex()
        return interval_bounds(self.mean.abs() if complex_image else self.mean, self.std, lam, complex_image, floor)
