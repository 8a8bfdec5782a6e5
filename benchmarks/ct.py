"""Benchmark: CT forward + adjoint time per 256x256 slice, ASTRA (CPU, CUDA when present) next to scikit-image.

Run by hand (not a test):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ct.py [--views 30 180 720] [--repeats 3] [--no-append]

For each view count it times ``A x`` followed by ``A^T y`` of the operators in
`operators.ct` (parallel beam ``linear`` and ``strip``, fan beam ``line_fanflat``)
and the pair ``skimage.transform.radon`` / ``iradon(filter_name=None)`` (its
unfiltered back projection), on head-CT test slices when ``../shared`` is there
(a disk phantom otherwise). Prints a markdown table and appends it to
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import wall_time  # noqa: E402
from operators.ct import FanBeam2D, ParallelBeam2D, cuda_available, sparse_view_angles  # noqa: E402

HEAD_CT = ROOT.parent / "shared" / "data" / "ct" / "head_ct.h5"
N = 256
N_DET = 367  # covers the 256 * sqrt(2) diagonal


def _slices(n: int) -> tuple[np.ndarray, str]:
    if HEAD_CT.exists():
        import h5py

        with h5py.File(HEAD_CT, "r") as f:
            hu = f["volume"][84:84 + n].astype(np.float32)  # test split
        return 0.0192 * np.clip(1 + hu / 1000, 0, None), f"head CT test slices 84..{83 + n}"
    c = np.arange(N) - (N - 1) / 2
    disk = (c[None] ** 2 + c[:, None] ** 2 <= 100**2).astype(np.float32) * 0.0192
    return np.stack([disk] * n), "disk phantom (../shared absent)"


def _astra_pair(op, x: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return op.adjoint(op.forward(x))
    return run


def _skimage_pair(images: np.ndarray, theta_deg: np.ndarray) -> Callable[[], object]:
    from skimage.transform import iradon, radon

    def run():
        for im in images:
            sino = radon(im, theta=theta_deg, circle=False)
            iradon(sino, theta=theta_deg, filter_name=None, circle=False, output_size=N)
    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, nargs="+", default=[30, 180, 720])
    ap.add_argument("--slices", type=int, default=2, help="slices per call (times are per slice)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args(argv)

    images, what = _slices(args.slices)
    x_cpu = torch.from_numpy(images)
    rows = []
    for n_views in args.views:
        angles = sparse_view_angles(n_views)
        fan_angles = sparse_view_angles(n_views, 2 * math.pi)
        ops = {
            "ASTRA parallel linear (CPU)": ParallelBeam2D((N, N), angles, N_DET),
            "ASTRA parallel strip (CPU)": ParallelBeam2D((N, N), angles, N_DET, projector="strip"),
            "ASTRA fan line_fanflat (CPU)": FanBeam2D((N, N), fan_angles, 2 * N_DET, 1.0, 600.0, 600.0),
        }
        for name, op in ops.items():
            rows.append((n_views, name, wall_time(_astra_pair(op, x_cpu), args.repeats,
                                                     summary=statistics.median) / args.slices))
        if cuda_available():
            x_gpu = x_cpu.cuda()
            for name, op in (("ASTRA parallel (CUDA)", ops["ASTRA parallel linear (CPU)"]),
                             ("ASTRA fan (CUDA)", ops["ASTRA fan line_fanflat (CPU)"])):
                rows.append((n_views, name, wall_time(_astra_pair(op, x_gpu), args.repeats, sync_cuda=True,
                                                         summary=statistics.median) / args.slices))
        theta = np.degrees(angles)
        rows.append((n_views, "skimage radon + iradon(filter=None)",
                     wall_time(_skimage_pair(images, theta), args.repeats, summary=statistics.median) / args.slices))

    table = ["| views | method | forward + adjoint per slice (ms) |", "|---:|---|---:|"]
    table += [f"| {v} | {name} | {1e3 * t:.1f} |" for v, name, t in rows]
    text = "\n".join(table)
    print(text)
    if not args.no_append:
        cmd = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ct.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = (
            f"\n## CT projectors: forward + adjoint per 256x256 slice ({dt.date.today().isoformat()})\n\n"
            f"- machine: 2 CPU cores ({platform.processor() or platform.machine()}), shared: load average "
            f"{os.getloadavg()[0]:.1f} at the end of the run; "
            f"CUDA: {'yes, ' + torch.cuda.get_device_name() if cuda_available() else 'no'}\n"
            f"- command: `{cmd.strip()}`\n"
            f"- data: {what}; {N_DET} detector bins (fan: {2 * N_DET} bins, source/detector 600/600 px); "
            f"median of {args.repeats} runs, {args.slices} slices per call\n\n{text}\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            if f.tell() == 0:
                f.write("# Benchmark results\n")
            f.write(section)


if __name__ == "__main__":
    main()
