"""Noise-level schedules in the VE parameterisation (sigma decreasing)."""
from __future__ import annotations

import torch

from .loop import Context, Sampler, SolverError


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """``sigma_i = sigma_max (sigma_min / sigma_max)^(i / (n - 1))``, i = 0..n-1 (NCSN / score SDE). float64 [n]."""
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return sigma_max * (sigma_min / sigma_max) ** t


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """EDM schedule (Karras et al. 2022, eq. 5): dense near sigma_min. float64 [n]."""
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    inv = 1.0 / rho
    return (sigma_max**inv + t * (sigma_min**inv - sigma_max**inv)) ** rho


def with_final_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Append sigma = 0, so step i goes from sigmas[i] to sigmas[i + 1] and the last step lands on x0."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def noise_range(sigma_max: float | None, sigma_min: float | None, default_max: float, default_min: float,
                method: str = "sampler") -> tuple[float, float]:
    """(sigma_max, sigma_min) with None meaning the default (the prior's trained range); 0.0 is a value, not unset.

    Raises SolverError unless ``0 < sigma_min < sigma_max``.
    """
    hi = default_max if sigma_max is None else float(sigma_max)
    lo = default_min if sigma_min is None else float(sigma_min)
    if not 0 < lo < hi:
        raise SolverError(f"{method}: need 0 < sigma_min < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return hi, lo


def sampler_noise_range(sampler: Sampler, ctx: Context) -> tuple[float, float]:
    """`noise_range` of a sampler with the fields ``sigma_max`` and ``sigma_min``, defaulting to the prior's range."""
    info = ctx.prior.info
    return noise_range(sampler.sigma_max, sampler.sigma_min, info.sigma_max, info.sigma_min, sampler.name)
