"""`Posterior.from_samples`: the per-voxel std of real (CT) and complex (MRI) samples."""
from __future__ import annotations

import torch

from solvers.posterior import Posterior


def test_std_of_real_samples_keeps_the_sign():
    # samples +1, -1, +1, -1 at every voxel: unbiased std = sqrt(4 / 3) = 1.1547; the std of |x| would be 0
    s = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(4, 1, 1).expand(4, 3, 5)
    post = Posterior.from_samples(s)
    assert post.std.dtype == torch.float32 and post.std.shape == (3, 5)
    assert torch.allclose(post.std, torch.full((3, 5), (4 / 3) ** 0.5), atol=1e-6)


def test_std_of_complex_samples_is_the_std_of_the_magnitude():
    # magnitudes 1 and 3 with varying phase: std of |x| over [1, 3, 1, 3] = sqrt(4 / 3); the phase is ignored
    mags = torch.tensor([1.0, 3.0, 1.0, 3.0])
    phase = torch.tensor([0.0, 1.0, 2.0, 3.0])
    s = torch.polar(mags, phase).reshape(4, 1, 1).expand(4, 2, 2)
    post = Posterior.from_samples(s)
    assert not post.std.is_complex()
    assert torch.allclose(post.std, torch.full((2, 2), (4 / 3) ** 0.5), atol=1e-6)


def test_one_sample_gives_zero_std_of_the_real_dtype():
    post = Posterior.from_samples(torch.ones(1, 4, 4, dtype=torch.complex64))
    assert post.std.dtype == torch.float32 and float(post.std.abs().max()) == 0.0
