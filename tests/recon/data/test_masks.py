"""Sampling masks: fastMRI semantics, achieved acceleration, determinism, acquired range."""
from __future__ import annotations

import numpy as np
import pytest

from recon.data.masks import KINDS, MaskError, make_mask

SHAPE = (320, 368)
ACQ = (20, 348)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "random"])
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_achieved_acceleration_within_10_percent(kind, accel, cf):
    m = make_mask(kind, SHAPE, accel, cf, seed=3, acquired=ACQ)
    assert m.acceleration == pytest.approx(accel, rel=0.10)


@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_random_mask_acceleration_on_average(accel, cf):
    # fastMRI's random mask draws each line independently, so one draw fluctuates (std ~ 10%);
    # the expected number of lines is n / R, so the mean over 30 seeds must be within 10%
    lines = [float(make_mask("random", SHAPE, accel, cf, seed=s, acquired=ACQ).mask.sum()) for s in range(30)]
    assert (ACQ[1] - ACQ[0]) / np.mean(lines) == pytest.approx(accel, rel=0.10)


def test_center_lines_follow_fastmri_fraction():
    n = 368
    m = make_mask("equispaced", (640, n), 4, 0.08, seed=0).mask.numpy()
    n_low = round(n * 0.08)
    pad = (n - n_low + 1) // 2
    assert m[pad: pad + n_low].all()


@pytest.mark.parametrize("kind", KINDS)
def test_masks_are_deterministic_and_stay_inside_the_acquired_lines(kind):
    a = make_mask(kind, SHAPE, 6, 0.06, seed=11, acquired=ACQ).mask
    b = make_mask(kind, SHAPE, 6, 0.06, seed=11, acquired=ACQ).mask
    c = make_mask(kind, SHAPE, 6, 0.06, seed=12, acquired=ACQ).mask
    assert (a == b).all() and not (a == c).all()
    assert float(a[..., : ACQ[0]].sum()) == 0 and float(a[..., ACQ[1]:].sum()) == 0


def test_bad_requests_raise():
    with pytest.raises(MaskError, match="acceleration must be > 1"):
        make_mask("random", SHAPE, 1.0)
    with pytest.raises(MaskError, match="unknown mask kind 'radial'"):
        make_mask("radial", SHAPE, 4)
    with pytest.raises(MaskError, match="impossible"):
        make_mask("equispaced", SHAPE, 8, 0.2)
