"""ESPIRiT maps: recovery of known maps, and soft SENSE on real reduced-FOV data."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from operators.espirit import CalibrationError, acs_region, acs_width, espirit, espirit_maps
from operators.fft import ifft2c
from recon.data.masks import make_mask
from recon.data.simulate import simulate_multicoil
from tests.conftest import FASTMRI_REAL, needs_shared


def _disc_phantom(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    img = ((xx**2 + yy**2) < 0.7**2).float() * (1 + 0.3 * torch.cos(3 * xx) * torch.sin(2 * yy))
    return img


def _map_correlation(est: torch.Tensor, maps: torch.Tensor, support: torch.Tensor) -> float:
    """|<s_est, s_true>| / (|s_est||s_true|) per pixel, mean over `support` (1 = the same maps up to phase)."""
    num = (est.conj() * maps).sum(0).abs()
    den = est.abs().pow(2).sum(0).sqrt() * maps.abs().pow(2).sum(0).sqrt()
    return float((num / den.clamp_min(1e-12))[support].mean())


def test_espirit_recovers_birdcage_maps_up_to_common_phase():
    img = _disc_phantom(96)
    k, maps, _ = simulate_multicoil(img, n_coils=8, noise_std=1e-4, seed=0)
    mask = make_mask("equispaced", (96, 96), 3, center_fraction=0.25, seed=0).mask  # 24 ACS lines
    est = espirit_maps(k * mask, calib_width=24)
    assert _map_correlation(est, maps, img > 0.5) >= 0.95


def test_noisy_data_keep_their_maps_when_the_noise_std_is_given():
    # noise 5% of the image max per part: with the relative threshold alone every singular value passes,
    # G(r) is about the identity, and both eigenvalue maps are ~1 everywhere (measured: second set above
    # the crop on 100% of the image, map correlation 0.51); with the noise edge: 0%, correlation 0.9998
    img = _disc_phantom(64)
    k, maps, _ = simulate_multicoil(img, n_coils=4, noise_std=0.05, seed=0)
    mask = make_mask("random", (64, 64), 3, center_fraction=0.3, seed=0).mask
    sigma = 0.05 * float(img.abs().max())
    blind = espirit(k * mask, calib_width=24, n_maps=2)
    aware = espirit(k * mask, calib_width=24, n_maps=2, noise_std=sigma)
    assert float((blind.eigvals[1] > 0.95).float().mean()) > 0.9
    assert float((aware.eigvals[1] > 0.95).float().mean()) < 0.05
    assert _map_correlation(blind.maps[0], maps, img > 0.5) < 0.8
    assert _map_correlation(aware.maps[0], maps, img > 0.5) >= 0.99


@pytest.mark.parametrize("fraction, n_low", [(0.04, 7), (0.06, 10), (0.08, 13), (0.12, 20)])
def test_acs_width_counts_only_the_centre_block_of_fastmri_masks(fraction, n_low):
    # fastMRI samples round(168 * fraction) centre lines; at 0.06 an equispaced line sits next to the
    # block on one side (11 contiguous lines) and must not be counted
    m = make_mask("equispaced", (32, 256), 4, center_fraction=fraction, seed=0, acquired=(44, 212),
                  span="acquired").mask
    assert round(168 * fraction) == n_low
    assert acs_width(torch.ones(2, 32, 256) * m) == n_low


def test_acs_region_of_a_2d_mask_is_the_centre_box():
    s = np.zeros((64, 48), bool)
    s[32 - 9: 32 + 9, 24 - 5: 24 + 5] = True   # 18 x 10 centre box
    s[::3, ::2] = True                           # scattered samples around it
    assert acs_region(s) == (18, 10)
    s2 = np.ones((64, 48), bool)
    s2[:, 24] = False                            # centre line missing: no ACS at all
    assert acs_region(s2) == (0, 0)


def test_too_narrow_centre_is_refused_with_the_found_width():
    k2 = np.zeros((2, 64, 64), np.complex64)
    k2[:, :, 30:34] = 1
    with pytest.raises(CalibrationError, match="64 x 4"):
        espirit_maps(k2)


def test_multiple_map_sets_have_expected_shape_and_torch_device():
    img = _disc_phantom(48)
    k, _, _ = simulate_multicoil(img, n_coils=4, seed=1)
    m2 = espirit_maps(k, calib_width=16, n_maps=2)
    assert m2.shape == (2, 4, 48, 48) and m2.dtype == torch.complex64
    # first set agrees with sigpy's single-set maps up to a phase (same operator, same top eigenvector)
    m1 = espirit_maps(k, calib_width=16)
    support = img > 0.5
    corr = ((m1.conj() * m2[0]).sum(0).abs())[support]
    assert float(corr.mean()) > 0.98


def _ls_residual(maps: torch.Tensor, coil: torch.Tensor) -> float:
    """Relative residual of the per-pixel least-squares fit coil[c] ~ sum_m maps[m, c] a_m."""
    a = (maps if maps.dim() == 4 else maps[None]).permute(2, 3, 1, 0).to(torch.complex128)  # H W C M
    b = coil.permute(1, 2, 0).unsqueeze(-1).to(torch.complex128)
    r = b - a @ torch.linalg.lstsq(a, b).solution
    return float(r.abs().pow(2).sum().sqrt() / b.abs().pow(2).sum().sqrt())


@needs_shared
def test_soft_sense_on_real_reduced_fov_data():
    # BART 0.8 `ecalib -r 24` (fully sampled) gives 0.40 with one set and 0.11 with two; ours (exact
    # eigenvectors, the full readout extent of the centre as calibration region) 0.177 and 0.113.
    with h5py.File(FASTMRI_REAL, "r") as f:
        k = torch.from_numpy(f["kspace"][0])
    mask = make_mask("equispaced", (320, 256), 4, center_fraction=0.0, seed=0, acquired=(44, 212),
                     span="acquired").mask
    mask[128 - 12: 128 + 12] = 1  # 24 ACS lines
    coil = ifft2c(k)
    r1 = _ls_residual(espirit_maps(k * mask, calib_width=24, n_maps=1), coil)
    r2 = _ls_residual(espirit_maps(k * mask, calib_width=24, n_maps=2), coil)
    assert r2 <= 0.15
    assert r2 <= 0.75 * r1


def test_kernel_and_calibration_region_follow_the_found_centre():
    # kernel: the wanted 6 while twice it fits in the centre, else half the centre (at least 3)
    from operators.espirit import espirit, kernel_for
    assert [kernel_for(w) for w in (24, 13, 12, 10, 8, 6, 4)] == [6, 6, 6, 5, 4, 3, 3]
    img = _disc_phantom(64)
    k, _, _ = simulate_multicoil(img, n_coils=4, seed=2)
    mask = torch.zeros(64)
    mask[27:37] = 1     # fastMRI's 10-line centre of 64: (64 - 10 + 1) // 2 = 27
    mask[2::4] = 1      # line 26 joins the block on the left only: not part of the centre
    res = espirit(k * mask, n_maps=1)
    # every readout row of the 10-line centre is calibration data (a 1D mask samples whole lines)
    assert res.acs == (64, 10) and res.calib == (64, 10) and res.kernel == 5
