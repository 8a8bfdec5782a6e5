"""benchmarks/user_path.py: the object-only PSNR of its second table."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.user_path import object_psnr


def test_object_psnr_ignores_the_background_and_uses_the_reference_max():
    ref = np.zeros((2, 8, 8))
    ref[:, 2:6, 2:6] = 4.0
    ref[:, 0, 0] = 0.3                      # below 10% of the max: background
    pred = ref + 0.4                          # error 0.1 of the max on every object pixel
    pred[:, 0:2, :] = 50.0                    # anything in the background
    assert object_psnr(ref, pred) == pytest.approx(20.0)
