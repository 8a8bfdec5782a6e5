"""Coil calibration: NLINV recovers image and coils, the choice between ESPIRiT and NLINV, maps auto, bad input."""
from __future__ import annotations

import json
import re

import h5py

import pytest
import torch

from operators.espirit import CalibrationError, NoSignalError
from operators.fft import fft2c, ifft2c, rss
from operators.nlinv import NlinvError, nlinv, sobolev_weights
from operators.mri import MultiCoilMRI
from recon.baselines.mri import cg_sense
from recon.problems.calibration import ESPIRIT_MIN_ACS, MIN_ACS, SECOND_SET_FRACTION, calibrate, nlinv_filled_centre
from recon.data.masks import make_mask
from recon.metrics import psnr
from recon.data.simulate import birdcage_maps, simulate_multicoil
from tests.conftest import FASTMRI_REAL, needs_shared


def _head(n: int, w: int | None = None) -> torch.Tensor:
    """An elliptical 'head' with a few inner structures filling most of the grid, real [n, w or n]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, w or n), indexing="ij")
    img = ((xx / 0.7) ** 2 + (yy / 0.85) ** 2 < 1).float()
    img = img + 0.5 * (((xx - 0.2) / 0.2) ** 2 + (yy / 0.35) ** 2 < 1).float()
    img = img - 0.4 * (((xx + 0.25) / 0.15) ** 2 + ((yy + 0.2) / 0.25) ** 2 < 1).float()
    return img


def _map_correlation(est: torch.Tensor, true: torch.Tensor, support: torch.Tensor) -> float:
    """Mean over `support` of |<s_est, s_true>| / (|s_est| |s_true|): 1 = equal up to a phase per pixel."""
    num = (est.conj() * true).sum(0).abs()
    den = est.abs().pow(2).sum(0).sqrt() * true.abs().pow(2).sum(0).sqrt()
    return float((num / den.clamp_min(1e-12))[support].mean())


def _equispaced(shape: tuple[int, int], acs: int, accel: float = 4) -> torch.Tensor:
    m = make_mask("equispaced", shape, accel, center_fraction=acs / shape[1], seed=0).mask
    return m.expand(shape)


def test_sobolev_weights_are_one_at_dc_and_decay():
    w = sobolev_weights((64, 48))
    assert float(w[32, 24]) == 1.0
    # (1 + 220 * 0.25)^-16 at the readout edge k = -1/2: about 1e-28
    assert float(w[0, 24]) == pytest.approx((1 + 220 * 0.25) ** -16, rel=1e-3)


def test_nlinv_recovers_image_and_coils_from_undersampled_data():
    img = _head(96)
    k, maps, x = simulate_multicoil(img, n_coils=8, noise_std=1e-3, seed=0)
    mask = _equispaced((96, 96), 10)
    res = nlinv(k * mask)
    support = img > 0.5
    # coils: NLINV's smooth coils match the birdcage maps up to a common phase (0.99 measured)
    assert _map_correlation(res.maps, maps, support) >= 0.97
    assert torch.allclose(rss(res.maps), torch.ones(96, 96), atol=1e-4)
    # image: rho * rss(c) against |x| on the object, relative error: 0.088 measured, zero-filled 0.116
    err = float((res.image.abs() - x.abs())[support].norm() / x.abs()[support].norm())
    zf = float((rss(ifft2c(k * mask)) - x.abs())[support].norm() / x.abs()[support].norm())
    assert err <= 0.11 and err < 0.9 * zf
    assert res.residual < 0.2


def test_nlinv_rejects_bad_input():
    with pytest.raises(NlinvError, match="complex k-space"):
        nlinv(torch.zeros(8, 8))
    with pytest.raises(NlinvError, match="all zero"):
        nlinv(torch.zeros(2, 8, 8, dtype=torch.complex64))
    k = torch.ones(2, 8, 8, dtype=torch.complex64)
    k[0, 0, 0] = float("nan")
    with pytest.raises(NlinvError, match="NaN"):
        nlinv(k)


def test_wide_centre_uses_espirit_with_one_set_on_an_unwrapped_object():
    img = _head(96)
    k, maps, _ = simulate_multicoil(img, n_coils=8, noise_std=1e-3, seed=1)
    cal = calibrate(k * _equispaced((96, 96), 24, accel=3))
    assert cal.method == "espirit" and cal.n_maps == 1 and cal.acs_width == 24
    assert cal.second_set_fraction < SECOND_SET_FRACTION   # 0.0 measured
    assert _map_correlation(cal.maps, maps, img > 0.5) >= 0.95
    rec = json.loads(json.dumps(cal.record()))
    assert rec["method"] == "espirit" and "ESPIRiT" in rec["reason"]


def test_narrow_centre_is_completed_by_nlinv_before_espirit():
    img = _head(96)
    k, maps, _ = simulate_multicoil(img, n_coils=8, noise_std=1e-3, seed=2)
    width = MIN_ACS
    cal = calibrate(k * _equispaced((96, 96), width))
    assert cal.method == "nlinv+espirit" and cal.n_maps == 1 and cal.acs_width == width
    assert f"{width} ACS lines < {ESPIRIT_MIN_ACS}" in cal.reason
    assert _map_correlation(cal.maps, maps, img > 0.5) >= 0.95


def test_nlinv_completed_centre_keeps_the_measured_samples():
    img = _head(64)
    k, _, _ = simulate_multicoil(img, n_coils=4, noise_std=1e-3, seed=4)
    mask = _equispaced((64, 64), 8)
    y = k * mask
    filled = nlinv_filled_centre(y, mask, width=24)
    assert torch.equal(filled[..., mask[0] > 0], y[..., mask[0] > 0])
    band = torch.zeros(64, dtype=torch.bool)
    band[20:44] = True
    assert bool((filled[..., band].abs().sum(0) > 0).all())           # the 24 centre lines are complete
    assert torch.equal(filled[..., ~band & (mask[0] == 0)], y[..., ~band & (mask[0] == 0)])  # outside: untouched
    # the filled lines are NLINV's model k-space F(rho c_j), not zeros: their energy is a sizeable part of the truth's
    gap = band & (mask[0] == 0)
    assert float(filled[..., gap].norm() / k[..., gap].norm()) > 0.3


def test_wrapped_field_of_view_gets_two_map_sets():
    # an object twice the field of view along the phase axis: keeping every other phase line of its
    # k-space halves the field of view, so each pixel holds two object points seen by different coils
    n = 96
    big = _head(n, 2 * n)                                               # 1.4 x the final field of view wide
    maps = birdcage_maps(8, (n, 2 * n), radius=1.2)
    k = fft2c(maps * big.to(torch.complex64))[..., ::2]                # [8, 96, 96], wrapped
    auto = calibrate(k * _equispaced((n, n), 24, accel=3))
    assert auto.method == "espirit" and auto.n_maps == 2 and auto.maps.shape == (2, 8, n, n)
    assert auto.second_set_fraction >= SECOND_SET_FRACTION   # 0.126 measured
    forced = calibrate(k * _equispaced((n, n), 24, accel=3), n_maps=1)
    assert forced.n_maps == 1 and forced.maps.shape == (8, n, n) and "requested" in forced.reason


def test_too_few_centre_lines_name_the_width_and_what_would_work():
    img = _head(64)
    k, _, _ = simulate_multicoil(img, n_coils=4, seed=3)
    mask = torch.zeros(64, 64)
    mask[:, ::4] = 1
    mask[:, 31:34] = 1   # 3 centre lines: 31, 32 (centre), 33
    with pytest.raises(CalibrationError, match=r"is 3 phase lines wide") as err:
        calibrate(k * mask, acquired_lines=128)
    # the suggested centre fraction, used as fastMRI does (round(n * fraction) lines), gives enough lines
    fraction = float(re.search(r"--center-fraction (\d\.\d+)", str(err.value)).group(1))
    assert round(128 * fraction) >= MIN_ACS > 3
    with pytest.raises(CalibrationError, match="n_maps"):
        calibrate(k, n_maps=3)



@pytest.mark.parametrize("acs", [24, MIN_ACS])   # ESPIRiT on the measured centre, and the NLINV-completed one
def test_a_slice_of_noise_alone_says_so_not_to_sample_more_lines(acs):
    """A slice outside the object: the error says the data hold no signal, not that the centre is too narrow,
    and an object at the same noise level is calibrated."""
    std = 0.01
    g = torch.Generator().manual_seed(4)
    noise = torch.complex(torch.randn(8, 96, 96, generator=g), torch.randn(8, 96, 96, generator=g)) * std
    mask = _equispaced((96, 96), acs, accel=3)
    with pytest.raises(NoSignalError, match="no signal above the noise") as err:
        calibrate(noise * mask, mask, noise_std=std)
    assert "center-fraction" not in str(err.value)
    k, _, _ = simulate_multicoil(_head(96), n_coils=8, noise_std=std, seed=4)
    assert calibrate(k * mask, mask, noise_std=std).maps.abs().sum() > 0

@needs_shared
@pytest.mark.parametrize("fraction, method, psnr_min", [(0.08, "nlinv+espirit", 25.6), (0.12, "espirit", 26.2)])
def test_real_wrapped_file_gets_two_sets_that_beat_zero_filled(fraction, method, psnr_min):
    # measured CG-SENSE PSNR with the chosen maps: 26.58 dB (13 ACS lines) and 27.15 dB (20 lines);
    # zero-filled 23.26 / 24.18; one ESPIRiT set from the measured centre 19.88 / 19.90
    with h5py.File(FASTMRI_REAL, "r") as f:
        k = torch.from_numpy(f["kspace"][0])
    mask = make_mask("equispaced", (320, 256), 4, fraction, seed=0, acquired=(44, 212), span="acquired").mask
    y = k * mask
    cal = calibrate(y, mask, acquired_lines=168)
    assert cal.method == method and cal.n_maps == 2 and cal.second_set_fraction >= 0.1
    ref = rss(ifft2c(k))
    scale = float(torch.quantile(rss(ifft2c(y)).flatten(), 0.99))
    x = cg_sense(MultiCoilMRI(cal.maps, mask), y / scale).mean * scale
    assert psnr(ref, x.abs().pow(2).sum(0).sqrt()) >= psnr_min
    assert psnr(ref, x.abs().pow(2).sum(0).sqrt()) >= psnr(ref, rss(ifft2c(y))) + 2.0
