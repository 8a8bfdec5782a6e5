"""The fastMRI target predicted from an image estimate: RSS of noisy coil images (noise floor)."""
from __future__ import annotations

import math

import pytest
import torch

from operators.mri import MultiCoilMRI
from recon.problems.mri import MRIProblem, noise_floor


def _rss_of_noisy_coils(magnitude: float, sigma: float, n_coils: int, draws: int = 400_000) -> float:
    """Monte Carlo mean of sqrt(sum_c |s_c x + n_c|^2), |s_c| = 1/sqrt(C), n_c complex with std sigma per part."""
    g = torch.Generator().manual_seed(n_coils)
    noise = torch.randn(draws, n_coils, 2, generator=g, dtype=torch.float64) * sigma
    noise[..., 0] += magnitude / math.sqrt(n_coils)
    return float(noise.pow(2).sum((1, 2)).sqrt().mean())


@pytest.mark.parametrize("n_coils", [1, 8, 16])
def test_noise_floor_is_the_mean_rss_of_pure_noise(n_coils):
    assert noise_floor(0.3, n_coils) == pytest.approx(_rss_of_noisy_coils(0.0, 0.3, n_coils), rel=3e-3)


def _problem(image: torch.Tensor, n_coils: int, sigma: float) -> MRIProblem:
    h, w = image.shape
    maps = torch.ones(n_coils, h, w, dtype=torch.complex64) / math.sqrt(n_coils)
    mask = torch.ones(h, w)
    op = MultiCoilMRI(maps, mask)
    return MRIProblem(op.forward(image), mask, maps, op, (h, w), None, 1.0, True, "random", noise_std=sigma)


@pytest.mark.parametrize("n_coils", [8, 16])
def test_rss_estimate_is_the_mean_rss_of_noisy_coil_images(n_coils):
    # the noncentral chi mean (Monte Carlo) at SNR 0 .. 33: sqrt(|x|^2 + b^2) is within 0.41% of it
    # (largest gap at |x| ~ 3 sigma, measured 0.41% for 8 coils)
    sigma = 0.3
    levels = torch.tensor([0.0, 0.3, 0.6, 1.0, 3.0, 10.0])
    image = (levels * torch.exp(1j * torch.linspace(0, 3, 6))).reshape(2, 3).to(torch.complex64)
    est = _problem(image, n_coils, sigma).rss_estimate(image).flatten()
    for value, level in zip(est.tolist(), levels.tolist()):
        assert value == pytest.approx(_rss_of_noisy_coils(level, sigma, n_coils), rel=6e-3)


def test_rss_estimate_is_the_magnitude_without_noise():
    image = torch.randn(4, 5, dtype=torch.complex64)
    p = _problem(image, 4, 0.0)
    assert torch.allclose(p.rss_estimate(image), image.abs())
