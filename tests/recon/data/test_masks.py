"""Sampling masks: fastMRI semantics, achieved acceleration, determinism, acquired range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.data.masks import KINDS, SPANS, MaskError, line_pattern_kind, make_mask
from tests.conftest import upstream_fastmri

SHAPE = (320, 368)
ACQ = (20, 348)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "random"])
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_achieved_acceleration_within_10_percent(kind, accel, cf):
    m = make_mask(kind, SHAPE, accel, cf, seed=3, acquired=ACQ, span="acquired")
    assert m.acceleration == pytest.approx(accel, rel=0.10)


@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_random_mask_acceleration_on_average(accel, cf):
    # fastMRI's random mask draws each line independently, so one draw fluctuates (std ~ 10%);
    # the expected number of lines is n / R, so the mean over 30 seeds must be within 10%
    lines = [float(make_mask("random", SHAPE, accel, cf, seed=s, acquired=ACQ, span="acquired").mask.sum())
             for s in range(30)]
    assert (ACQ[1] - ACQ[0]) / np.mean(lines) == pytest.approx(accel, rel=0.10)


def test_center_lines_follow_fastmri_fraction():
    n = 368
    m = make_mask("equispaced", (640, n), 4, 0.08, seed=0).mask.numpy()
    n_low = round(n * 0.08)
    pad = (n - n_low + 1) // 2
    assert m[pad: pad + n_low].all()


@pytest.mark.parametrize("span", SPANS)
@pytest.mark.parametrize("kind", KINDS)
def test_masks_are_deterministic_and_stay_inside_the_acquired_lines(kind, span):
    a = make_mask(kind, SHAPE, 6, 0.06, seed=11, acquired=ACQ, span=span).mask
    b = make_mask(kind, SHAPE, 6, 0.06, seed=11, acquired=ACQ, span=span).mask
    c = make_mask(kind, SHAPE, 6, 0.06, seed=12, acquired=ACQ, span=span).mask
    assert (a == b).all() and not (a == c).all()
    assert float(a[..., : ACQ[0]].sum()) == 0 and float(a[..., ACQ[1]:].sum()) == 0


@pytest.mark.parametrize("kind, func", [("random", "RandomMaskFunc"), ("equispaced", "EquispacedMaskFractionFunc")])
@pytest.mark.parametrize("accel, cf", [(4, 0.08), (8, 0.04), (4, 0.12)])
@pytest.mark.parametrize("seed", [0, 5])
def test_padded_files_get_fastmris_own_masks(kind, func, accel, cf, seed, monkeypatch):
    # fastMRI builds the mask over the whole phase axis (padding included) and zeroes the padding in
    # apply_mask(..., padding=(left, right)); the default span must give the same lines on a padded file
    subsample = upstream_fastmri("fastmri.data.subsample", monkeypatch)
    transforms = upstream_fastmri("fastmri.data.transforms", monkeypatch)
    kspace = torch.ones(2, SHAPE[0], SHAPE[1], 2)  # fastMRI's real-pair layout [coils, readout, phase, 2]
    _, upstream, _ = transforms.apply_mask(kspace, getattr(subsample, func)([cf], [accel], seed=seed), padding=ACQ)
    ours = make_mask(kind, SHAPE, accel, cf, seed=seed, acquired=ACQ)
    assert torch.equal(ours.mask, upstream.flatten().float())
    # R counts the padding too, so the acquired lines are undersampled less than R
    assert 1 < ours.acceleration < accel


def test_the_acquired_span_counts_the_centre_and_r_over_the_acquired_lines():
    m = make_mask("equispaced", SHAPE, 4, 0.08, seed=0, acquired=ACQ, span="acquired")
    n = ACQ[1] - ACQ[0]
    n_low = round(n * 0.08)
    pad = ACQ[0] + (n - n_low + 1) // 2
    assert m.mask[pad: pad + n_low].all()
    full = make_mask("equispaced", SHAPE, 4, 0.08, seed=0, acquired=ACQ)
    assert float(m.mask.sum()) < float(full.mask.sum())


def test_bad_requests_raise():
    with pytest.raises(MaskError, match="acceleration must be > 1"):
        make_mask("random", SHAPE, 1.0)
    with pytest.raises(MaskError, match="unknown mask kind 'radial'"):
        make_mask("radial", SHAPE, 4)
    with pytest.raises(MaskError, match="unknown mask span 'padded'"):
        make_mask("random", SHAPE, 4, span="padded")
    with pytest.raises(MaskError, match="impossible"):
        make_mask("equispaced", SHAPE, 8, 0.2)


@pytest.mark.parametrize("func, expected", [("EquispacedMaskFractionFunc", "equispaced"),
                                            ("EquiSpacedMaskFunc", "equispaced"), ("RandomMaskFunc", "random")])
def test_a_files_own_line_pattern_is_recognised_on_fastmris_masks(func, expected, monkeypatch):
    """fastMRI's own mask functions at its accelerations, several widths and seeds (spacings that are not integers
    differ by one line), and ours; 2D patterns are told apart."""
    subsample = upstream_fastmri("fastmri.data.subsample", monkeypatch)
    for cf, accel in ((0.08, 4), (0.04, 8), (0.08, 3), (0.04, 6)):
        for width in (192, 320, 368, 396):
            for seed in range(3):
                lines = getattr(subsample, func)([cf], [accel])((1, 640, width, 2), seed=seed)
                lines = (lines[0] if isinstance(lines, tuple) else lines).numpy().reshape(-1)
                assert line_pattern_kind(lines) == expected, (cf, accel, width, seed)
    kind = "equispaced" if expected == "equispaced" else "random"
    mask = make_mask(kind, SHAPE, 4, 0.08, seed=1, acquired=ACQ).mask
    assert line_pattern_kind(mask.expand(SHAPE)) == expected
    assert line_pattern_kind(make_mask("poisson", (64, 64), 4, 0.1).mask) == "2d"
    assert line_pattern_kind(np.r_[np.zeros(10), np.ones(4), np.zeros(10)]) == "random"   # centre only: no evidence
