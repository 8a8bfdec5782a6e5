"""Choose the CT TV weight (`recon.baselines.ct_iterative.DEFAULT_LAM_TV`) on head-CT validation slices 72..83.

    OMP_NUM_THREADS=1 python -m benchmarks.tune_ct_tv [--lams 0.5,1,1.5,3] [--views 60] [--I0 N [--unweighted]]
                                                  [--slices 72:84] [--n-iter 300]

Prints mean PSNR (HU window [-1024, 2000], data range 3024) per weight, with FBP and SIRT (100 iterations,
non-negative) on the same slices as references. Validation slices only: the test split is never read.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recon import metrics
from recon.baselines.ct_analytic import fbp
from recon.baselines.ct_iterative import intensity_unit, sirt, tv_pdhg
from recon.problems.ct import HU_RANGE, CTSpec, metric_image, simulated_ct_problem
from recon.data.ct_slices import CT_VAL, ct_path


def _psnr(ref_hu: np.ndarray, problem, x: torch.Tensor) -> float:
    return metrics.psnr(metric_image(ref_hu), metric_image(problem.to_hu(x).numpy()), HU_RANGE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lams", default="0.5,1,1.5,3")
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--I0", type=float, default=None)
    ap.add_argument("--slices", default="72:84", help="validation range lo:hi[:step]")
    ap.add_argument("--n-iter", type=int, default=300)
    ap.add_argument("--unweighted", action="store_true", help="with --I0: ignore the statistical weights")
    a = ap.parse_args(argv)
    import h5py

    lo, hi, *rest = (int(v) for v in a.slices.split(":"))
    step = rest[0] if rest else 1
    if not (CT_VAL[0] <= lo < hi <= CT_VAL[-1] + 1):
        raise SystemExit(f"--slices must lie in the validation split {CT_VAL[0]}..{CT_VAL[-1]}")
    with h5py.File(ct_path(), "r") as f:
        vol = f["volume"][lo:hi:step].astype(np.float32)
        pixel = float(f.attrs["spacing_mm_xyz"][0])
    lams = [float(v) for v in a.lams.split(",")]
    rows: dict[str, list[float]] = {"fbp": [], "sirt": [], **{f"tv lam={lam:g}": [] for lam in lams}}
    t0 = time.perf_counter()
    for i, hu in enumerate(vol):
        index = lo + i * step
        p = simulated_ct_problem(hu, pixel, CTSpec(views=a.views, I0=a.I0, seed=index))
        p.op.cpu_matrix = True  # same numbers as per-slice ASTRA calls, ~10x faster
        A, y = (p.op, p.y) if a.unweighted else (p.data_op, p.data_y)
        rows["fbp"].append(_psnr(hu, p, fbp(p.y, p.op)))
        rows["sirt"].append(_psnr(hu, p, sirt(y, A, 100, nonneg=True)))
        unit = intensity_unit(y, A)
        for lam in lams:
            rows[f"tv lam={lam:g}"].append(_psnr(hu, p, tv_pdhg(y, A, lam, a.n_iter, unit=unit)))
        print(f"slice {index}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()), flush=True)
    w = "unweighted" if a.unweighted or a.I0 is None else "weighted"
    print(f"\n| method ({a.views} views, I0 {a.I0} {w}, {a.n_iter} TV iterations, slices {a.slices}) "
          "| mean PSNR dB | min |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {np.mean(v):.2f} | {np.min(v):.2f} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
