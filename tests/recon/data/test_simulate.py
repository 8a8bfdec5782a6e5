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
