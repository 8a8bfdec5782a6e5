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
