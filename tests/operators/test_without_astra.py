"""The package without a working ASTRA: MRI works, CT operators say what is missing.

On a machine whose astra-toolbox cannot load (seen on a GPU machine with CUDA 13 only: the wheel links CUDA 12's
libcufft), `import operators` used to fail, and with it every MRI path. The import of ASTRA is blocked here in a
fresh interpreter, as that machine's loader failed it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_ASTRA = """
import sys
class _NoAstra:
    def find_spec(self, name, path=None, target=None):
        if name == "astra" or name.startswith("astra."):
            raise ImportError("libcufft.so.11: cannot open shared object file: No such file or directory")
        return None
sys.meta_path.insert(0, _NoAstra())
"""

CHECKS = """
import json, pathlib, tempfile
import numpy as np
import torch
import operators
from operators import ASTRAUnavailableError, MultiCoilMRI, ParallelBeam2D, adjointness_error, cuda_available
from recon.cli import main
from recon.data.demo_sample import SAMPLE

assert not cuda_available()
maps = torch.ones(2, 16, 16, dtype=torch.complex64) / 2 ** 0.5
assert adjointness_error(MultiCoilMRI(maps, torch.ones(16, 16)), batch=(2,)) < 1e-5
try:
    ParallelBeam2D((16, 16), np.linspace(0, np.pi, 8, endpoint=False), 23)
except ASTRAUnavailableError as e:
    print("CT:", e)
else:
    raise AssertionError("a CT operator was built without ASTRA")
with tempfile.TemporaryDirectory() as out:
    rc = main(["reconstruct", str(SAMPLE), "--out", out, "--solver", "zero-filled", "--slices", "0:1", "--quiet"])
    record = json.loads(next(pathlib.Path(out).glob("*.json")).read_text())
    print("rc", rc, "psnr", record["solvers"]["zero-filled"]["psnr"])
    import h5py
    hu = np.where(np.add.outer(np.linspace(-1, 1, 32) ** 2, np.linspace(-1, 1, 32) ** 2) < 0.6, 40.0, -1000.0)
    with h5py.File(pathlib.Path(out) / "head.h5", "w") as f:
        f.create_dataset("volume", data=hu[None].astype(np.int16)).attrs["spacing_mm_xyz"] = (1.0, 1.0, 1.0)
    rc = main(["reconstruct", str(pathlib.Path(out) / "head.h5"), "--out", out + "/ct", "--solver", "fbp",
               "--views", "20", "--quiet"])
    print("ct rc", rc)
"""


def test_mri_works_and_ct_names_the_missing_astra():
    res = subprocess.run([sys.executable, "-c", BLOCK_ASTRA + CHECKS], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ct_line = next(line for line in res.stdout.splitlines() if line.startswith("CT:"))
    assert "ParallelBeam2D needs ASTRA" in ct_line and "libcufft.so.11" in ct_line
    rc_line = next(line for line in res.stdout.splitlines() if line.startswith("rc"))
    rc, psnr = rc_line.split()[1], float(rc_line.split()[3])
    assert rc == "0" and 15.0 < psnr < 40.0
    # a CT file: that file fails (exit status non-zero) and the message on stderr says ASTRA is what is missing
    assert "ct rc 0" not in res.stdout and "ct rc" in res.stdout
    assert "head.h5" in res.stderr and "needs ASTRA" in res.stderr
