"""Classical MRI and CT baselines: exactness where it is known, improvement over zero-filled / FBP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sigpy
import torch

from operators.base import OperatorShapeError
from operators.ct import ParallelBeam2D, sparse_view_angles
from operators.mri import MultiCoilMRI
from recon.baselines.ct_iterative import (cgls_reconstruction, divergence, fbp_reconstruction, gradient,
                                          sirt_reconstruction, tv_reconstruction)
from recon.baselines.mri import cg_sense, l1_wavelet, total_variation, zero_filled
from recon.data.masks import make_mask
from recon.metrics import psnr
from recon.data.simulate.mri import simulate_multicoil


def _phantom(n: int = 64) -> torch.Tensor:
    return torch.from_numpy(np.abs(sigpy.shepp_logan((n, n))).astype(np.float32))


@pytest.fixture(scope="module")
def mri_case():
    """8-coil Shepp-Logan 64x64, noise 0.5 % of the maximum, random 1D mask at 4x (centre 0.08)."""
    k, maps, x = simulate_multicoil(_phantom(), 8, noise_std=0.005, seed=0)
    mask = make_mask("random", (64, 64), 4, 0.08, seed=3).mask
    return k * mask, maps, mask, x


def test_zero_filled_is_exact_on_fully_sampled_kspace():
    # birdcage maps have sum_c |S_c|^2 = 1, so RSS = |x| and the SENSE combination = x (float32 rounding only)
    k, maps, x = simulate_multicoil(_phantom(32), 4, seed=1)
    rss = zero_filled(k)
    sense = zero_filled(k, MultiCoilMRI(maps), combine="sense")
    assert rss.std is None and rss.method == "zero-filled-rss"
    assert float((rss.mean - x.abs()).abs().max()) < 1e-5
    assert float((sense.mean - x).abs().max()) < 1e-5


def test_zero_filled_rejects_bad_requests(mri_case):
    y, maps, _, _ = mri_case
    with pytest.raises(ValueError, match="combine must be one of"):
        zero_filled(y, combine="mean")
    with pytest.raises(ValueError, match="needs the operator"):
        zero_filled(y, combine="sense")
    with pytest.raises(OperatorShapeError, match="complex k-space"):
        zero_filled(y.abs())


def test_cg_sense_without_regularisation_inverts_fully_sampled_data():
    # A^H A = I for a full mask and normalised maps: one CG step solves it exactly
    k, maps, x = simulate_multicoil(_phantom(32), 4, seed=2)
    post = cg_sense(k, MultiCoilMRI(maps), lam=0.0, n_iter=3)
    assert post.hparams == {"lam": 0.0, "n_iter": 3}
    assert float((post.mean - x).abs().max()) < 1e-4


@pytest.mark.parametrize("method", ["cg_sense", "l1_wavelet", "total_variation"])
def test_classical_mri_methods_improve_on_zero_filled(mri_case, method):
    y, maps, mask, x = mri_case
    target = x.abs()
    base = psnr(target, zero_filled(y).mean)  # 16.0 dB measured
    if method == "cg_sense":
        post = cg_sense(y, MultiCoilMRI(maps, mask))          # 17.5 dB measured
    elif method == "l1_wavelet":
        post = l1_wavelet(y, maps, mask)                      # 19.2 dB measured
    else:
        post = total_variation(y, maps, mask)                 # 17.7 dB measured
    assert post.std is None and post.mean.shape == (64, 64) and post.wall_time > 0
    # at least 1 dB: the smallest measured gain (CG-SENSE, 1.5 dB) with margin for BLAS/FFT rounding
    assert psnr(target, post.mean.abs()) > base + 1.0


def test_sigpy_methods_batch_over_leading_dimensions(mri_case):
    y, maps, mask, _ = mri_case
    one = l1_wavelet(y, maps, mask, max_iter=5).mean
    two = l1_wavelet(torch.stack([y, 2 * y]), maps, mask, max_iter=5).mean
    assert two.shape == (2, 64, 64)
    # same problem for slice 0; the solution of 2y with the same lam is close to 2x the solution of y
    assert float((two[0] - one).abs().max()) < 1e-5
    assert float((two[1] - 2 * one).abs().max() / one.abs().max()) < 0.05


def test_sigpy_methods_check_shapes(mri_case):
    y, maps, mask, _ = mri_case
    with pytest.raises(OperatorShapeError, match="maps"):
        total_variation(y, maps[:4], mask)
    with pytest.raises(OperatorShapeError, match="mask"):
        l1_wavelet(y, maps, mask[:10])


def test_tv_gradient_and_divergence_are_negative_adjoints():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 9, generator=g, dtype=torch.float64)
    q = torch.randn(2, 2, 7, 9, generator=g, dtype=torch.float64)
    # <grad x, q> = -<x, div q> up to float64 rounding
    assert abs(float((gradient(x) * q).sum() + (x * divergence(q)).sum())) < 1e-12


@pytest.fixture(scope="module")
def ct_case():
    """64x64 Shepp-Logan, 20 parallel views, Gaussian sinogram noise at 1 % of the maximum."""
    img = _phantom()
    op = ParallelBeam2D((64, 64), sparse_view_angles(20), math.ceil(64 * math.sqrt(2)))
    y = op(img)
    y = y + 0.01 * y.max() * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    return img, op, y


@pytest.mark.parametrize("method", ["sirt", "cgls", "tv"])
def test_iterative_ct_methods_improve_on_fbp(ct_case, method):
    img, op, y = ct_case
    base = psnr(img, fbp_reconstruction(y, op).mean)  # 17.5 dB measured
    post = {"sirt": lambda: sirt_reconstruction(y, op, n_iter=100),   # 21.3 dB measured
            "cgls": lambda: cgls_reconstruction(y, op, n_iter=10),     # 18.9 dB measured
            "tv": lambda: tv_reconstruction(y, op, lam=0.1, n_iter=200)}[method]()  # 29.4 dB measured
    assert post.std is None and post.mean.shape == (64, 64)
    # 0.5 dB: below the smallest measured gain (CGLS, 1.3 dB), above rounding differences between builds
    assert psnr(img, post.mean) > base + 0.5


def test_tv_without_regularisation_fits_the_data_better_than_with():
    img, op = _phantom(32), ParallelBeam2D((32, 32), sparse_view_angles(12), 46)
    y = op(img)
    free = tv_reconstruction(y, op, lam=0.0, n_iter=150).mean
    strong = tv_reconstruction(y, op, lam=5.0, n_iter=150).mean
    res = lambda x: float(torch.linalg.vector_norm(op(x) - y))  # noqa: E731
    # lam = 0 is non-negative least squares (the phantom fits exactly); a large TV weight must cost data fit
    assert res(free) < 0.05 * float(torch.linalg.vector_norm(y))
    assert res(strong) > 2 * res(free)
    assert float((strong >= 0).float().mean()) == 1.0
