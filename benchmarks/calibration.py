"""Coil calibration against the width of the fully sampled centre (ACS): where do ESPIRiT maps stop working?

For each ACS width L, an equispaced 4x fastMRI mask with exactly L centre lines (checked with
`operators.espirit.acs_width`) undersamples a fully sampled slice, the coils are calibrated from the
undersampled data, and the maps are judged by

* ``fit``: relative residual of the fully sampled coil images projected per pixel onto the span of the
  maps (0 = the maps explain every coil image; what SENSE-type reconstructions assume), and
* ``sense``: PSNR (fastMRI convention) of CG-SENSE (20 iterations, lam 1e-3 on data scaled so the
  zero-filled image has p99 = 1) with those maps, against the RSS of the fully sampled coil images.

Calibrations: ESPIRiT with 1 and 2 map sets (`operators.espirit`) on the measured centre; NLINV
(`operators.nlinv`, one set; ``nlinv_image`` is NLINV's own image); ``hybrid``: ESPIRiT with 1 and 2 sets on
a 24-line centre completed by NLINV's k-space prediction (`recon.problems.calibration.nlinv_filled_centre`).
``second_set``: support of ESPIRiT's second set (eigenvalue > 0.95) over the first set's.
Data: a BrainWeb validation slice (subject 49, T1, 8 and 16 birdcage coils, noise 0.2 % of the maximum)
and the real 8-coil T1 file (reduced field of view with wrap-around), slice 0.

    OMP_NUM_THREADS=1 python -m benchmarks.calibration [--widths 6 8 10 13 16 20 24] [--data sim8 sim16 real]
    OMP_NUM_THREADS=1 python -m benchmarks.calibration --sets 181 170 160 150 --widths 13 24

``--sets``: the same slice folded to a smaller phase field of view (wrap-around), calibrated with 1 and 2
ESPIRiT sets: where the second set's support (`recon.problems.calibration.SECOND_SET_FRACTION`) starts to pay.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from operators.espirit import CalibrationError, acs_width, espirit
from operators.fft import fft2c, ifft2c, rss
from operators.mri import MultiCoilMRI
from operators.nlinv import nlinv
from recon.baselines.mri import cg_sense
from recon.problems.calibration import nlinv_filled_centre
from recon.data.masks import make_mask
from recon.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "fastmri_format" / "brain_t1_8ch_real.h5"


def simulated(n_coils: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """BrainWeb subject 49 (validation), middle slice of 8, T1: k-space complex64 [C, 217, 181]."""
    from recon.data.brainweb import brainweb_slices
    from recon.data.simulate import simulate_multicoil
    img = brainweb_slices(49, "T1w", np.random.default_rng(0), n_slices=8)[4]
    k, _, _ = simulate_multicoil(torch.from_numpy(img), n_coils=n_coils, noise_std=0.002, seed=0)
    return k, (0, k.shape[-1])


def wrapped(fov: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """The `simulated` slice (8 coils) with a phase field of view of `fov` < 181 lines: the object is placed in a
    grid of 2 * fov lines and every other k-space line is kept, so it wraps where it is wider than `fov`."""
    from recon.data.brainweb import brainweb_slices
    from recon.data.simulate import birdcage_maps
    img = torch.from_numpy(brainweb_slices(49, "T1w", np.random.default_rng(0), n_slices=8)[4])
    big = torch.zeros(img.shape[0], 2 * fov, dtype=torch.complex64)
    off = (2 * fov - img.shape[1]) // 2
    big[:, off: off + img.shape[1]] = img
    k = fft2c(birdcage_maps(8, tuple(big.shape)) * big)[..., ::2]
    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
    return k + 0.002 * float(img.abs().max()) * noise, (0, fov)


def map_sets(fovs: list[int], widths: list[int]) -> None:
    """Second-set support and CG-SENSE PSNR with 1 and 2 sets (`recon.problems.calibration.calibrate`) on wrapped data."""
    from recon.problems.calibration import calibrate
    print("| field of view (object 181) | acs | calibration | second_set | sense, 1 set | sense, 2 sets |")
    print("|---|---|---|---|---|---|")
    for fov in fovs:
        k, acquired = simulated(8) if fov >= 181 else wrapped(fov)
        ref = rss(ifft2c(k))
        for width in widths:
            m = make_mask("equispaced", tuple(k.shape[-2:]), 4, width / k.shape[-1], seed=0, acquired=acquired).mask
            y = k * m
            two, one = calibrate(y, m, n_maps=2), calibrate(y, m, n_maps=1)
            print(f"| {fov} | {two.acs_width} | {two.method} | {two.second_set_fraction:.3f} | "
                  f"{sense_psnr(y, m, one.maps, ref):.2f} | {sense_psnr(y, m, two.maps, ref):.2f} |", flush=True)


def real() -> tuple[torch.Tensor, tuple[int, int]]:
    """The real 8-coil T1 file, slice 0: k-space complex64 [8, 320, 256], phase lines 44..211 acquired."""
    import h5py
    with h5py.File(REAL, "r") as f:
        return torch.from_numpy(f["kspace"][0]), (44, 212)


def fit_residual(maps: torch.Tensor, coil: torch.Tensor) -> float:
    """Relative residual of the per-pixel least-squares fit ``coil[c] ~ sum_m maps[m, c] a_m``."""
    a = (maps if maps.dim() == 4 else maps[None]).permute(2, 3, 1, 0).to(torch.complex128)   # H W C M
    b = coil.permute(1, 2, 0).unsqueeze(-1).to(torch.complex128)
    r = b - a @ torch.linalg.lstsq(a, b).solution
    return float(r.abs().pow(2).sum().sqrt() / b.abs().pow(2).sum().sqrt())


def sense_psnr(y: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, ref: torch.Tensor) -> float:
    scale = float(torch.quantile(rss(ifft2c(y)).flatten(), 0.99))
    x = cg_sense(MultiCoilMRI(maps, mask), y / scale).mean * scale
    mag = x.abs() if maps.dim() == 3 else x.abs().pow(2).sum(0).sqrt()
    return psnr(ref, mag)


def evaluate(name: str, k: torch.Tensor, acquired: tuple[int, int], widths: list[int]) -> list[dict]:
    coil = ifft2c(k)
    ref = rss(coil)
    n = acquired[1] - acquired[0]
    rows = []
    for width in widths:
        m = make_mask("equispaced", tuple(k.shape[-2:]), 4, width / n, seed=0, acquired=acquired).mask
        y = k * m
        found = acs_width(y)
        row = {"data": name, "acs": found, "zero_filled": psnr(ref, rss(ifft2c(y)))}
        try:
            t = time.perf_counter()
            res = espirit(y, n_maps=2)
            row["t_espirit"] = time.perf_counter() - t
            row["kernel"] = res.kernel
            inside = res.eigvals[0] > 0.95
            row["second_set"] = float((res.eigvals[1] > 0.95).sum() / inside.sum().clamp_min(1))
            for n_maps in (1, 2):
                maps = res.maps[0] if n_maps == 1 else res.maps
                row[f"espirit{n_maps}_fit"] = fit_residual(maps, coil)
                row[f"espirit{n_maps}_sense"] = sense_psnr(y, m, maps, ref)
        except CalibrationError:
            pass
        t = time.perf_counter()
        hyb = espirit(nlinv_filled_centre(y, m, 24), n_maps=2)
        row["t_hybrid"] = time.perf_counter() - t
        row["hybrid_second_set"] = float((hyb.eigvals[1] > 0.95).sum() / (hyb.eigvals[0] > 0.95).sum().clamp_min(1))
        for n_maps in (1, 2):
            maps = hyb.maps[0] if n_maps == 1 else hyb.maps
            row[f"hybrid{n_maps}_fit"] = fit_residual(maps, coil)
            row[f"hybrid{n_maps}_sense"] = sense_psnr(y, m, maps, ref)
        t = time.perf_counter()
        nl = nlinv(y, m)
        row["t_nlinv"] = time.perf_counter() - t
        row["nlinv_fit"] = fit_residual(nl.maps, coil)
        row["nlinv_sense"] = sense_psnr(y, m, nl.maps, ref)
        row["nlinv_image"] = psnr(ref, nl.image.abs())
        rows.append(row)
        print(_line(row), flush=True)
    return rows


COLUMNS = ["data", "acs", "kernel", "zero_filled", "second_set", "espirit1_fit", "espirit1_sense", "espirit2_fit",
           "espirit2_sense", "nlinv_fit", "nlinv_sense", "nlinv_image", "hybrid_second_set", "hybrid1_fit",
           "hybrid1_sense", "hybrid2_fit", "hybrid2_sense", "t_espirit", "t_nlinv", "t_hybrid"]


def _line(row: dict) -> str:
    cells = []
    for c in COLUMNS:
        v = row.get(c, "-")
        cells.append(f"{v:.3f}" if isinstance(v, float) and c.endswith(("fit", "set")) else
                     f"{v:.2f}" if isinstance(v, float) else str(v))
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[6, 8, 10, 13, 16, 20, 24])
    ap.add_argument("--data", nargs="+", default=["sim8", "sim16", "real"], choices=["sim8", "sim16", "real"])
    ap.add_argument("--sets", type=int, nargs="*", metavar="FOV",
                    help="instead: the map-set table for these phase fields of view (181 = no wrap-around)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.sets:
        map_sets(a.sets, a.widths)
        return
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for name in a.data:
        k, acquired = real() if name == "real" else simulated(int(name[3:]))
        evaluate(name, k, acquired, a.widths)


if __name__ == "__main__":
    main()
