"""Choose the U-Net's line-bootstrap settings (`keep`) and interval floor on validation slices that are not the
interval calibration set, on the command line's own path.

    python -m benchmarks.unet_spread --work benchmarks/data/unet_spread --report benchmarks/results/unet_spread.md

1. writes fastMRI-like files of the validation subjects (49, 50) with 9 slices each (`--slices`) and uses the 7
   inner ones: the 9-slice grid meets the 20-slice grid of the calibration files
   (`benchmarks.calibrate_intervals`) only at its first and last slice, which are left out;
2. runs ``recon reconstruct --solver unet --set unet.keep=K`` (random masks, fastMRI centre fractions) for each
   `--keeps` value and acceleration;
3. for each interval floor (`--floors`), finds the lambda at which the object pixels' mean miss rate is 2.5% (what
   conformal risk control at alpha 0.05 allows on 40 calibration images) and reports the mean width there
   (% of the reference max) and Spearman(width, |error|) over 8 x 8 object patches.

The setting with the smallest mean width over the accelerations is the one to ship (`recon.baselines.unet.KEEP`,
`recon.intervals.METHOD_FLOORS`); a constant width (the floor alone) is reported for comparison.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.calibrate_intervals import collect, patch_spearman
from benchmarks.common import write_report
from benchmarks.user_path import make_files, reconstruct
from recon import intervals as iv

MISS = 0.025  # mean miss rate CRC at alpha 0.05 allows on 40 images: (0.05 * 41 - 1) / 40


def width_at_miss(mean: np.ndarray, std: np.ndarray, ref: np.ndarray, floor: float) -> tuple[float, float, float]:
    """(lambda, mean width in % of the reference max, Spearman) where the mean per-slice miss rate reaches `MISS`."""
    grid = np.round(np.arange(0.0, 200.0 + 1e-9, 0.01), 2)
    loss = iv.losses(mean, std, ref, grid, floor).mean(0)
    lam = float(grid[np.flatnonzero(loss <= MISS)[0]])
    lo, hi = iv.interval(mean, std, lam, floor=floor)
    obj = iv.object_mask(ref)
    width = hi - lo
    return lam, 100 * float(width[obj].mean()) / float(ref.max()), patch_spearman(width, np.abs(ref - mean), ref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data/fastmri_like/select"))
    ap.add_argument("--subjects", type=int, nargs="+", default=[49, 50])
    ap.add_argument("--slices", type=int, default=9)
    ap.add_argument("--accels", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.9])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.1, 0.3, 0.5, 1.0, 2.0])
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/unet_spread.md"))
    a = ap.parse_args(argv)

    files = make_files(a.data, a.subjects, a.slices)
    inner = ["--slices", f"1:{a.slices - 1}"]
    rows, mean_width = [], {}
    for keep in a.keeps:
        for accel in a.accels:
            out = a.work / f"keep{keep:g}-R{accel:g}"
            reconstruct(files, out, "unet", "random", accel, [*inner, "--set", f"unet.keep={keep:g}"])
            mean, std, ref, _ = collect(out, "unet")
            for floor in a.floors:
                lam, width, rho = width_at_miss(mean, std, ref, floor)
                rows.append(f"| {keep:g} | {accel:g}x | {floor:g} | {lam:.2f} | {width:.1f}% | {rho:.2f} |")
                mean_width.setdefault((keep, floor), []).append(width)
            lam, width, _ = width_at_miss(mean, np.full_like(std, 0.01 * float(ref.max())), ref, 0.0)
            rows.append(f"| {keep:g} | {accel:g}x | constant width | {lam:.2f} | {width:.1f}% | - |")
    best = min(mean_width, key=lambda k: np.mean(mean_width[k]))
    lines = ["# The U-Net's line bootstrap: keep probability and interval floor (validation)", "",
             f"Command: `python -m benchmarks.unet_spread --work WORK --slices {a.slices} --keeps "
             f"{' '.join(f'{k:g}' for k in a.keeps)} --floors {' '.join(f'{f:g}' for f in a.floors)}`", "",
             f"Data: fastMRI-like BrainWeb {a.subjects}, slices 1-{a.slices - 2} of {a.slices} (not the calibration "
             f"set's slices), {len(ref)} slices per setting; `recon reconstruct --solver unet --mask random --accel R "
             "--set unet.keep=K` (8 replicates). Lambda: where the mean miss rate over the object pixels is "
             f"{MISS:.1%} (what conformal risk control at 0.05 allows on 40 images); width in % of the reference "
             "max; Spearman of width vs |error| over 8x8 object patches.", "",
             "| keep | setting | floor | lambda | width | Spearman |", "|---|---|---|---|---|---|", *rows, "",
             f"Smallest mean width over the accelerations: keep {best[0]:g}, floor {best[1]:g} "
             f"({np.mean(mean_width[best]):.1f}%)."]
    write_report(a.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
