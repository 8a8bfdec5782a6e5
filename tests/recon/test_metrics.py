"""Metrics: known answers under fastMRI's convention."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.metrics import nmse, psnr, ssim


def test_psnr_known_answer_uses_volume_max():
    gt = np.zeros((2, 8, 8))
    gt[0, 0, 0] = 4.0  # volume max 4
    pred = gt + 0.1    # MSE = 0.01
    assert psnr(gt, pred) == pytest.approx(10 * math.log10(16 / 0.01), abs=1e-9)


def test_nmse_known_answer_and_torch_complex_inputs():
    gt = torch.full((1, 4, 4), 2.0)
    pred = torch.full((1, 4, 4), 1.0) * torch.exp(torch.tensor(1j))  # magnitude 1
    assert nmse(gt, pred) == pytest.approx(0.25)


def test_ssim_is_one_for_identical_and_averaged_over_slices():
    rng = np.random.default_rng(0)
    gt = rng.random((3, 32, 32))
    assert ssim(gt, gt) == pytest.approx(1.0)
    pred = gt.copy()
    pred[1] = rng.random((32, 32))
    from skimage.metrics import structural_similarity
    s1 = structural_similarity(gt[1], pred[1], data_range=gt.max())
    assert ssim(gt, pred) == pytest.approx((2 + s1) / 3)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
