"""`recon simulate`: fastMRI-like files from BrainWeb, through the command line."""
from __future__ import annotations

import h5py

from recon.cli import main as cli
from recon.data.io import load_fastmri
from tests.conftest import needs_shared


def test_simulate_without_out_or_subjects_is_a_usage_error(tmp_path, capsys):
    assert cli(["simulate", "fastmri-like", "--subjects", "51"]) == 2
    assert "needs --out" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@needs_shared
def test_simulate_fastmri_like_writes_a_readable_16_coil_file_with_its_true_noise(tmp_path):
    assert cli(["simulate", "fastmri-like", "--out", str(tmp_path), "--subjects", "51", "--slices", "1"]) == 0
    path = tmp_path / "brainweb51_t1w.h5"
    vol = load_fastmri(path)
    with h5py.File(path) as f:
        assert f["kspace"].shape[:2] == (1, 16)
        assert f["kspace"].shape[-2] == 2 * f["reconstruction_rss"].shape[-2]   # readout oversampled 2x
        assert float(f.attrs["true_noise_std"]) > 0
    assert vol.n_slices == 1


@needs_shared
def test_simulate_at_0_7_mm_pixels_gives_fastmris_brain_resolution(tmp_path):
    """--pixel-mm 0.7: the same anatomy on a finer grid, 0.5 x [434, 362] / 0.7 = 310 x 259 pixels in a 320 x 272
    recon field of view; the recon size is each side rounded up to 16 (1 mm: 217 x 181 in 224 x 192)."""
    from recon.data.simulate.fastmri_like import recon_size_of

    assert recon_size_of((217, 181)) == (224, 192) and recon_size_of((310, 259)) == (320, 272)
    assert cli(["simulate", "fastmri-like", "--out", str(tmp_path), "--subjects", "51", "--slices", "1",
                "--coils", "4", "--pixel-mm", "0.7"]) == 0
    with h5py.File(tmp_path / "brainweb51_t1w.h5") as f:
        assert f["kspace"].shape == (1, 4, 640, 272) and f["reconstruction_rss"].shape == (1, 320, 272)


def test_resampled_tissue_fractions_keep_areas_in_millimetres():
    """A disc of white matter (radius 40 mm) in 0.5 mm labels: at 0.7 mm pixels its area in pixels is the area in mm^2
    divided by 0.49, the fractions sum to 1 everywhere, and 1 mm keeps the 2x2x2 block average."""
    import numpy as np

    from recon.data.brainweb import tissue_fractions

    yy, xx = np.mgrid[:200, :180]
    disc = ((yy - 100) ** 2 + (xx - 90) ** 2) * 0.25 < 40.0**2             # 0.5 mm pixels, 40 mm radius
    labels = np.where(disc, 3, 0).astype(np.uint8)[None].repeat(2, 0)        # [z, y, x]: one 1 mm slice
    area_mm2 = np.pi * 40.0**2
    for pixel_mm in (0.7, 1.0, 1.3):
        frac = tissue_fractions(labels, 0, pixel_mm)
        np.testing.assert_allclose(frac.sum(0), 1.0, atol=1e-5)
        assert abs(frac[3].sum() * pixel_mm**2 / area_mm2 - 1) < 0.01, pixel_mm
    expect = disc.reshape(100, 2, 90, 2).mean(axis=(1, 3))[::-1]
    np.testing.assert_allclose(tissue_fractions(labels, 0)[3], expect, atol=1e-6)


def test_write_images_simulates_any_recon_size_and_coil_count(tmp_path):
    import numpy as np
    import torch

    from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_images
    from recon.data.simulate.mri import birdcage_maps

    yy, xx = np.mgrid[:40, :32]
    x = (((yy - 20) / 15.0) ** 2 + ((xx - 16) / 11.0) ** 2 < 1) * np.exp(0.05j * xx)   # a disc with a phase ramp
    spec = FastMRILikeSpec(n_slices=1, n_coils=6, noise_rel=0.0)
    path = write_images(tmp_path / "disc.h5", x[None], spec, {"acquisition": "TEST", "patient_id": "disc"})
    vol = load_fastmri(path)
    with h5py.File(path) as f:
        assert f["kspace"].shape == (1, 6, 80, 32)
        target = f["reconstruction_rss"][0]
        assert f.attrs["acquisition"] == "TEST" and float(f.attrs["true_noise_std"]) == 0.0
    maps = birdcage_maps(6, (80, 32), radius=1.5)[:, 20:60].abs()          # the recon window of the 2x readout
    expected = np.abs(x) * torch.sqrt((maps ** 2).sum(0)).numpy()
    assert vol.n_slices == 1 and target.shape == (40, 32)
    assert np.allclose(target, expected, atol=1e-4 * expected.max())


def test_write_single_coil_combines_the_coils_into_one_of_uniform_sensitivity(tmp_path):
    """The single-coil file's image is the object itself (up to one phase map): against the noiseless disc
    within 1% of its maximum, where one of the multi-coil file's coils is shaded by its sensitivity."""
    import numpy as np
    import torch

    from operators.fft import ifft2c
    from recon.data.io import center_crop
    from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_images, write_single_coil

    yy, xx = np.mgrid[:40, :32]
    x = (((yy - 20) / 15.0) ** 2 + ((xx - 16) / 11.0) ** 2 < 1) * np.exp(0.05j * xx)
    multi = write_images(tmp_path / "disc.h5", x[None], FastMRILikeSpec(n_slices=1, n_coils=6, noise_rel=0.0),
                         {"acquisition": "TEST", "patient_id": "disc"})
    single = write_single_coil(multi, tmp_path / "disc_sc.h5")
    vol = load_fastmri(single)
    with h5py.File(single) as f:
        assert f["kspace"].shape == (1, 80, 32) and "reconstruction_esc" in f and "reconstruction_rss" not in f
        target = f["reconstruction_esc"][0]
        assert f.attrs["acquisition"] == "TEST"
    assert not vol.multicoil and vol.header.recon_size[:2] == (40, 32)
    image = center_crop(ifft2c(torch.as_tensor(vol.kspace[0])).abs(), (40, 32)).numpy()
    assert np.allclose(image, target, atol=1e-5)
    inside = np.abs(x) > 0
    ratio = target[inside] / np.abs(x)[inside]
    assert abs(target - np.abs(x) * np.median(ratio)).max() < 0.01 * target.max()
    with h5py.File(multi) as g:   # one coil alone is shaded: the check above can fail
        coil = center_crop(ifft2c(torch.as_tensor(g["kspace"][0, 0])).abs(), (40, 32)).numpy()
    assert abs(coil - np.abs(x) * np.median(coil[inside] / np.abs(x)[inside])).max() > 0.1 * coil.max()
