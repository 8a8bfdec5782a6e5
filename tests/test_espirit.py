"""ESPIRiT maps: recovery of known maps, and soft SENSE on real reduced-FOV data."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from operators.espirit import CalibrationError, acs_width, espirit_maps
from operators.fft import ifft2c
from recon.masks import make_mask
from recon.simulate import birdcage_maps, simulate_multicoil
from tests.conftest import FASTMRI_REAL, needs_shared


def _disc_phantom(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    img = ((xx**2 + yy**2) < 0.7**2).float() * (1 + 0.3 * torch.cos(3 * xx) * torch.sin(2 * yy))
    return img


def test_espirit_recovers_birdcage_maps_up_to_common_phase():
    # |<s_est, s_true>| / (|s_est||s_true|) per pixel, mean over the object: >= 0.95 required
    img = _disc_phantom(96)
    k, maps, _ = simulate_multicoil(img, n_coils=8, noise_std=1e-4, seed=0)
    mask = make_mask("equispaced", (96, 96), 3, center_fraction=0.25, seed=0).mask  # 24 ACS lines
    est = espirit_maps(k * mask, calib_width=24)
    support = img > 0.5
    num = (est.conj() * maps).sum(0).abs()
    den = est.abs().pow(2).sum(0).sqrt() * maps.abs().pow(2).sum(0).sqrt()
    corr = (num / den.clamp_min(1e-12))[support]
    assert float(corr.mean()) >= 0.95


def test_acs_width_is_found_from_the_data():
    k = np.zeros((2, 64, 64), np.complex64)
    k[:, :, 20:44] = 1  # 24 centre lines
    k[:, :, ::4] = 1
    assert acs_width(k) == 24
    k2 = np.zeros((2, 64, 64), np.complex64)
    k2[:, :, 30:34] = 1
    with pytest.raises(CalibrationError, match="only 4 lines wide"):
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
    # BART 0.8 `ecalib -r 24` (fully sampled) gives 0.40 with one set and 0.11 with two.
    with h5py.File(FASTMRI_REAL, "r") as f:
        k = torch.from_numpy(f["kspace"][0])
    mask = make_mask("equispaced", (320, 256), 4, center_fraction=0.0, seed=0, acquired=(44, 212)).mask
    mask[128 - 12: 128 + 12] = 1  # 24 ACS lines
    coil = ifft2c(k)
    r1 = _ls_residual(espirit_maps(k * mask, calib_width=24, n_maps=1), coil)
    r2 = _ls_residual(espirit_maps(k * mask, calib_width=24, n_maps=2), coil)
    assert r2 <= 0.15
    assert r2 * 2 <= r1
