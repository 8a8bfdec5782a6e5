"""Shared test helpers: where ../shared is, small seeded inputs and hand-written HDF5 files."""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import h5py
import numpy as np
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


def write_h5(path: Path, **datasets: np.ndarray | dict[str, np.ndarray]) -> Path:
    """Write an HDF5 file holding exactly `datasets` (name -> array; a dict value is a group of datasets),
    making its folder; the files the readers must refuse are written this way. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            if isinstance(data, dict):
                group = f.create_group(name)
                for member, values in data.items():
                    group.create_dataset(member, data=values)
            else:
                f.create_dataset(name, data=data)
    return path


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def write_bad_fastmri(path: Path, case: str) -> Path:
    """Write at `path` a file the fastMRI reader refuses and return `path`. `case`: missing (nothing written),
    not_hdf5 (a text file), no_kspace (only an ``image`` [2, 4, 4]), rank (2D complex k-space [4, 4]) or real
    (real k-space [1, 2, 4, 4])."""
    if case == "not_hdf5":
        path.write_text("not hdf5")
    elif case != "missing":
        write_h5(path, **{"no_kspace": dict(image=np.zeros((2, 4, 4))),
                          "rank": dict(kspace=np.zeros((4, 4), np.complex64)),
                          "real": dict(kspace=np.zeros((1, 2, 4, 4), np.float32))}[case])
    return path


def upstream_fastmri(module: str, monkeypatch):
    """A module of the installed fastMRI package (`pip install --no-deps fastmri`, see the Makefile), e.g.
    "fastmri.evaluate" or "fastmri.data.subsample", or skip.

    `fastmri/data/__init__.py` imports its datasets (pandas, PyYAML, requests), which these modules never
    use; when those are absent, `fastmri.data` is stood in by a bare package over the same folder, so the
    unmodified upstream files run.
    """
    fastmri = pytest.importorskip("fastmri")
    try:
        return importlib.import_module(module)
    except ImportError:
        for mod in [m for m in sys.modules if m.startswith("fastmri.data") or m == module]:
            monkeypatch.delitem(sys.modules, mod)
        shim = types.ModuleType("fastmri.data")
        shim.__path__ = [str(Path(fastmri.__file__).parent / "data")]
        monkeypatch.setitem(sys.modules, "fastmri.data", shim)
        monkeypatch.setattr(fastmri, "data", shim, raising=False)
        return importlib.import_module(module)
