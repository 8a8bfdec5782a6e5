"""Shared test helpers: where ../shared is, and small seeded inputs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]           # the repository
TEST_DATA = ROOT / "tests" / "data"                   # small inputs made by the project's own code
WEIGHTS = ROOT / "priors" / "weights"                 # bundled priors and U-Nets
SHARED = ROOT.parent / "shared"                       # real data and fixtures, absent in a user's clone
SHARED_DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"
FASTMRI_REAL = SHARED_DATA / "fastmri_format" / "brain_t1_8ch_real.h5"
HEAD_CT = SHARED_DATA / "ct" / "head_ct.h5"

needs_shared = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not present")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
