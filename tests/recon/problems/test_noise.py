"""Noise estimation from k-space (`recon.problems.noise`): known noise on simulated slices, the fallback, the real file."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from benchmarks.noise_estimation import complex_normal, noise_covariance, sample_anatomy, simulate_case
from recon.data.io import FastMRIHeader
from recon.problems.noise import (AUTO_ORDER, METHODS, NoiseEstimationWarning, estimate_noise,
                         rescale_record, whiten, whitening_matrix)
from tests.conftest import FASTMRI_REAL

LEVELS = (0.005, 0.015, 0.05)           # std per real/imag part, images at p99(|x|) = 1: SNR 200 / 67 / 20
TOL = 0.15                              # the bound; the benchmark measures <= ~3 % on these cases


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return sample_anatomy()[1]          # bundled BrainWeb-51 slice, complex64 [192, 160], always present


@pytest.mark.slow
@pytest.mark.parametrize("std,coils,oversample,correlated",
                         list(itertools.product(LEVELS, (8, 16), (False, True), (False, True))))
def test_estimate_within_15_percent_on_undersampled_simulated_kspace(image, std, coils, oversample, correlated):
    """fastMRI random 4x mask (8 % centre lines): the margin estimator where the readout is oversampled, the
    calibration null space (with a fitted coil covariance) where it is not."""
    k, readout, psi = simulate_case(image, coils, std, oversample, correlated, undersample=True, seed=coils)
    est = estimate_noise(k, readout_size=readout, source="sim")
    assert est.method == ("margin" if oversample else "calibration")
    assert abs(est.std / std - 1) < TOL, est.to_json()["estimates"]
    # the coil covariance comes with it (relative Frobenius error measured 2-9 %)
    assert float(torch.linalg.norm(est.coil_cov - psi) / torch.linalg.norm(psi)) < 0.25


@pytest.mark.parametrize("std", LEVELS)
def test_background_estimator_on_fully_sampled_correlated_coils(image, std):
    k, readout, psi = simulate_case(image, 8, std, False, True, undersample=False, seed=3)
    est = estimate_noise(k, readout_size=readout, methods=METHODS, run_all=True)
    assert est.method == "background"
    for m in ("background", "calibration"):                 # both unbiased; wavelet is not (edges)
        assert abs(est.estimates[m] / std - 1) < TOL, (m, est.estimates)
    per_coil = torch.tensor(est.coil_std) / (psi.diagonal().real / 2).sqrt()
    assert (per_coil - 1).abs().max() < TOL


def test_white_noise_is_unbiased_for_every_default_estimator(image):
    """Fully sampled, oversampled, independent coils: margin, background and calibration all apply."""
    k, readout, _ = simulate_case(image, 8, 0.015, True, False, undersample=False, seed=1)
    est = estimate_noise(k, readout_size=readout, run_all=True)
    assert set(est.estimates) == set(AUTO_ORDER)
    assert all(abs(v / 0.015 - 1) < 0.05 for v in est.estimates.values()), est.estimates


def test_noiseless_data_fall_back_with_a_warning_naming_the_source(image):
    """Zero readout margins and a calibration matrix with an exact null space: nothing to estimate."""
    k, readout, _ = simulate_case(image, 8, 0.0, True, False, undersample=True)
    with pytest.warns(NoiseEstimationWarning, match=r"noiseless\.h5 slice 2: no measurement noise.*noise_std = 0"):
        est = estimate_noise(k, readout_size=readout, source="noiseless.h5 slice 2")
    rec = json.loads(json.dumps(est.to_json()))
    assert est.std == 0.0 and rec["method"] == "fallback"
    assert "noiseless.h5" in rec["warning"] and rec["fallback"].startswith("noise_std = 0")
    assert "float round-off" in rec["skipped"]["margin"] and "calibration" in rec["skipped"]


def test_too_small_calibration_region_is_reported_not_guessed(image):
    """A 4-line centre is below a 6x6 kernel plus 2: the calibration estimator says so; no oversampling and
    undersampled data leave nothing else, so the fallback is used."""
    k, _, _ = simulate_case(image, 8, 0.015, False, False, undersample=False)
    m = torch.zeros(k.shape[-1])
    m[::4] = 1
    m[k.shape[-1] // 2 - 2: k.shape[-1] // 2 + 2] = 1
    with pytest.warns(NoiseEstimationWarning):
        est = estimate_noise(k * m, source="tiny-acs")
    assert est.method == "fallback" and "too small" in est.skipped["calibration"]


def test_whitening_decorrelates_coils_and_keeps_the_mean_noise_variance():
    psi = noise_covariance(8, seed=5).to(torch.complex128)
    g = torch.Generator().manual_seed(0)
    n = (torch.linalg.cholesky(psi) @ complex_normal((8, 200 * 200), g)).reshape(8, 200, 200)
    w = whiten(n, psi).reshape(8, -1)
    cov = w @ w.conj().T / w.shape[1]
    target = float(psi.diagonal().real.mean()) * 2            # E|z|^2 = 2 per sample
    # sample covariance of 40,000 samples: entries within ~4/sqrt(40000) = 2 % of the diagonal
    assert (cov - target * torch.eye(8)).abs().max() < 0.03 * target
    assert torch.allclose(whitening_matrix(psi), whitening_matrix(psi).conj().T, atol=1e-10)   # Hermitian


def test_json_record_and_rescaling(image):
    k, readout, _ = simulate_case(image, 8, 0.015, True, True, undersample=False)
    est = estimate_noise(k, readout_size=readout)
    rec = json.loads(json.dumps(est.to_json()))                # plain JSON types only
    assert {"std", "method", "estimates", "skipped", "coil_std", "coil_corr_max", "coil_cov", "warning"} <= set(rec)
    back = rescale_record(rec, 10.0)
    assert back["std"] == pytest.approx(10 * rec["std"])
    assert back["coil_cov"]["re"][0][0] == pytest.approx(100 * rec["coil_cov"]["re"][0][0])


def test_bad_input_raises_a_specific_error():
    from recon.problems.noise import NoiseEstimationError
    with pytest.raises(NoiseEstimationError, match="complex k-space"):
        estimate_noise(torch.zeros(4, 8, 8))
    k = torch.zeros(2, 8, 8, dtype=torch.complex64)
    k[0, 0, 0] = float("nan")
    with pytest.raises(NoiseEstimationError, match="NaN"):
        estimate_noise(k)


def test_prepare_mri_slice_estimates_before_the_readout_crop(image):
    """`noise_std=None` estimates from the raw (oversampled) slice; the readout crop keeps the per-sample std;
    a number is used as given; 0 is today's noiseless behaviour. (A 96 x 80 version of the slice keeps the
    coil calibration quick.)"""
    from operators.fft import fft2c, ifft2c
    from recon.data.io import center_crop
    from recon.problems.mri import MaskSpec, prepare_mri_slice

    small = ifft2c(center_crop(fft2c(image), (96, 80)))
    k, readout, _ = simulate_case(small, 8, 0.015, True, False, undersample=False)
    h, w = k.shape[-2:]
    header = FastMRIHeader((h, w, 1), (readout, w, 1), 0, w)
    spec = MaskSpec(acceleration=3.0, center_fraction=0.22)
    p = prepare_mri_slice(k, header, spec, noise_std=None)
    assert p.y.shape[-2] == readout
    assert abs(p.noise_std / 0.015 - 1) < TOL and p.noise["method"] == "margin"
    # the cropped, masked data carry the same per-sample noise: the estimate on them (calibration) agrees
    crop = estimate_noise(p.y.cpu(), readout_size=readout)
    assert crop.method == "calibration" and abs(crop.std / p.noise_std - 1) < TOL
    q = prepare_mri_slice(k, header, spec, noise_std=0.0)
    assert q.noise_std == 0.0 and q.noise is None
    assert prepare_mri_slice(k, header, spec, noise_std=0.02).noise_std == 0.02


@pytest.mark.shared
@pytest.mark.skipif(not FASTMRI_REAL.exists(), reason="real T1 file (../shared/data) not present")
def test_real_t1_estimates_agree_across_slices_methods_and_regions():
    """The real file (8 coils, readout not oversampled, 1 slice): per-slice estimates within 10 % of their
    median; on each slice background (fully sampled) and calibration (fully sampled and retrospectively
    undersampled) within 5 % of each other, and the background of each image quarter within 5 %.
    Measured: background 7.09, calibration 6.97 (6.90 at 4x), quarters 7.02-7.13."""
    from recon.data.io import load_fastmri
    from recon.data.masks import make_mask
    from recon.problems.noise import background_noise

    with load_fastmri(FASTMRI_REAL) as vol:
        hdr = vol.header
        per_slice = []
        for s in range(vol.n_slices):
            k = torch.from_numpy(vol.kspace[s])
            est = estimate_noise(k, readout_size=hdr.recon_size[0], run_all=True,
                                 source=f"{FASTMRI_REAL.name} slice {s}")
            assert est.method == "background" and est.warning is None
            mask = make_mask("random", tuple(k.shape[-2:]), 4.0, 0.08, seed=0, acquired=hdr.acquired_lines).mask
            under = estimate_noise(k * mask, readout_size=hdr.recon_size[0])
            assert under.method == "calibration"
            values = [est.estimates["background"], est.estimates["calibration"], under.std]
            assert max(values) / min(values) < 1.05, values
            h, w = k.shape[-2:]
            quarters = []
            for rs, cs in itertools.product((slice(0, h // 2), slice(h // 2, h)), (slice(0, w // 2), slice(w // 2, w))):
                region = torch.zeros(h, w, dtype=torch.bool)
                region[rs, cs] = True
                quarters.append(background_noise(k, region=region, min_fraction=0.001).std)
            assert max(quarters) / min(quarters) < 1.05, quarters
            per_slice.append(est.std)
    med = float(np.median(per_slice))
    assert all(abs(v / med - 1) < 0.10 for v in per_slice), per_slice
    assert 3.0 < med < 15.0                 # noise std ~7 in file units (RSS p99 476: ~1.5 % of the image)
