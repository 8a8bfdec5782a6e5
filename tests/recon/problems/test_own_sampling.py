"""Files that are already undersampled keep their own sampling, with readout oversampling too."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.data.io import FastMRIHeader
from recon.data.masks import make_mask
from recon.data.simulate.fastmri_like import FastMRILikeSpec, header_for, simulate_images
from recon.problems.mri import MaskSpec, prepare_mri_slice


@pytest.mark.parametrize("kind", ["equispaced", "random"])
@pytest.mark.parametrize("oversample", [1, 2])
def test_an_undersampled_file_keeps_its_own_lines_and_acceleration(kind, oversample):
    """The mask is the file's sampled lines (not the round-off the readout crop's FFTs leave in empty lines), the
    acceleration is lines / sampled lines, and the sampling kind is read off the pattern."""
    yy, xx = np.mgrid[-1:1:64j, -1:1:96j]
    image = torch.from_numpy(((xx**2 / 0.6 + yy**2 / 0.8) < 1).astype(np.complex64))[None]
    spec = FastMRILikeSpec(n_coils=4, oversample=oversample)
    k = simulate_images(image, spec, np.random.default_rng(0))["kspace"][0]       # [C, oversample * 64, 96]
    lines = make_mask(kind, k.shape[-2:], 3, 0.2, seed=3).mask.numpy()            # [96], 19 centre lines
    header: FastMRIHeader = header_for(oversample, (64, 96))
    pb = prepare_mri_slice(k * lines, header, MaskSpec("random", 8, 0.04))        # MaskSpec ignored: own sampling
    assert not pb.retrospective and pb.mask_kind == "file" and pb.sampling == kind
    assert pb.mask.shape == (64, 96) and torch.equal(pb.mask[0], torch.from_numpy(lines))
    assert pb.acceleration == pytest.approx(96 / lines.sum())
    assert 19 <= pb.calibration["acs_width"] <= 21
