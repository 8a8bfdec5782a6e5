"""Benchmark: `NonCartesianMRI` forward, adjoint and Toeplitz normal next to sigpy's NUFFT linop.

8 coils, 256x256 image, radial trajectories of 64 / 128 / 402 spokes x 512 samples, on CPU (and
CUDA when present). For each configuration it prints the best wall time of ``--reps`` runs of:

* ``forward``, ``adjoint``: `NonCartesianMRI` (torchkbnufft, 6-point kernel, 2x grid);
* ``fwd+adj``: ``adjoint(forward(x))``, the normal operator without Toeplitz embedding;
* ``toeplitz``: ``normal(x)`` through the Toeplitz kernel (what CG calls), and its speed-up over fwd+adj;
* the same three for sigpy (``sp.linop.NUFFT`` composed with the coil maps, its defaults: 4-point
  kernel, 1.25x grid; its normal with ``toeplitz=True``), CPU only;
* one-off set-up: the Toeplitz kernel (torchkbnufft) and PSF (sigpy);
* accuracy: relative difference of the Toeplitz normal from fwd+adj, and the dot-product
  adjointness error, both at complex64.

The target is a Toeplitz normal at least 5x faster than fwd+adj on CPU. The table is appended to
``benchmarks/RESULTS.md``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nufft.py`` (``--spokes 64 --reps 1`` for a quick
look). One torch thread by default: on a shared 2-core machine the 2-thread timings of torchkbnufft
varied up to 10x between runs, the 1-thread ones by under 15%.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sigpy as sp
import torch

from operators.base import adjointness_error
from operators.nufft import NonCartesianMRI
from operators.trajectories import radial
from recon.data.simulate.mri import birdcage_maps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from benchmarks.common import wall_time  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _bench_torch(n: int, coils: int, spokes: int, readout: int, reps: int, device: str) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    maps = birdcage_maps(coils, (n, n)).to(device)
    traj = radial(spokes, readout).to(device)
    t0 = time.perf_counter()
    op = NonCartesianMRI(maps, traj, toeplitz=True)
    if device == "cuda":
        torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    x = torch.randn(n, n, dtype=torch.complex64, generator=g).to(device)
    y = op(x)
    with torch.no_grad():
        out = {
            "forward": wall_time(lambda: op(x), reps, sync_cuda=device == "cuda"),
            "adjoint": wall_time(lambda: op.adjoint(y), reps, sync_cuda=device == "cuda"),
            "fwd+adj": wall_time(lambda: op.adjoint(op(x)), reps, sync_cuda=device == "cuda"),
            "toeplitz": wall_time(lambda: op.normal(x), reps, sync_cuda=device == "cuda"),
        }
        ref = op.adjoint(op(x))
        out["toep_err"] = float((op.normal(x) - ref).norm() / ref.norm())
        out["adj_err"] = adjointness_error(op, dtype=torch.complex64, device=device, generator=g)
    out["setup"] = setup
    return out


def _bench_sigpy(n: int, coils: int, spokes: int, readout: int, reps: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    maps = birdcage_maps(coils, (n, n)).numpy()
    coord = (radial(spokes, readout).double().numpy().T * (n / (2 * math.pi))).astype(np.float32)  # [K, 2], grid units
    S = sp.linop.Multiply((n, n), maps)
    F = sp.linop.NUFFT((coils, n, n), coord, toeplitz=True)
    A = F * S
    t0 = time.perf_counter()
    normal = S.H * F.N * S  # builds sigpy's Toeplitz PSF
    setup = time.perf_counter() - t0
    x = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))).astype(np.complex64)
    y = A(x)
    return {
        "forward": wall_time(lambda: A(x), reps),
        "adjoint": wall_time(lambda: A.H(y), reps),
        "fwd+adj": wall_time(lambda: A.H(A(x)), reps),
        "toeplitz": wall_time(lambda: normal(x), reps),
        "setup": setup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--readout", type=int, default=512)
    parser.add_argument("--spokes", type=int, nargs="+", default=[64, 128, 402])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op and inter-op threads (torchkbnufft forks its interpolation; with 2 "
                             "threads on 2 busy shared cores its times varied 10x between runs)")
    parser.add_argument("--no-sigpy", action="store_true", help="skip the sigpy comparison")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    load_start = os.getloadavg()[0]

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    head = ("| device | library | spokes | forward s | adjoint s | fwd+adj s | Toeplitz normal s | speed-up "
            "| set-up s | Toeplitz rel. err | adjointness err |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for spokes in args.spokes:
        for device in devices:
            r = _bench_torch(args.size, args.coils, spokes, args.readout, args.reps, device)
            rows.append(
                f"| {device} | torchkbnufft | {spokes} | {r['forward']:.4f} | {r['adjoint']:.4f} | {r['fwd+adj']:.4f} "
                f"| {r['toeplitz']:.4f} | {r['fwd+adj'] / r['toeplitz']:.1f}x | {r['setup']:.3f} "
                f"| {r['toep_err']:.1e} | {r['adj_err']:.1e} |"
            )
            print(rows[-1], flush=True)
        if not args.no_sigpy:
            s = _bench_sigpy(args.size, args.coils, spokes, args.readout, args.reps)
            rows.append(
                f"| cpu | sigpy | {spokes} | {s['forward']:.4f} | {s['adjoint']:.4f} | {s['fwd+adj']:.4f} "
                f"| {s['toeplitz']:.4f} | {s['fwd+adj'] / s['toeplitz']:.1f}x | {s['setup']:.3f} | | |"
            )
            print(rows[-1], flush=True)

    table = "\n".join(rows)
    print("\n" + table)
    if args.no_append:
        return
    cmd = " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", ".venv/bin/python benchmarks/nufft.py",
                    *sys.argv[1:]])
    section = (
        f"\n## Non-Cartesian MRI: NUFFT forward / adjoint / Toeplitz normal ({dt.date.today().isoformat()})\n\n"
        f"- machine: 2 CPU cores ({platform.processor() or platform.machine()}), shared: load average "
        f"{load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run; torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads), sigpy {sp.__version__}"
        + (f", CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device") + "\n"
        f"- problem: {args.coils} coils, {args.size}x{args.size} image, radial spokes of {args.readout} samples, "
        f"complex64; best of {args.reps} runs after a warm-up\n"
        f"- torchkbnufft: 6-point Kaiser-Bessel, 2x grid; sigpy `NUFFT` defaults: width 4, 1.25x grid, "
        f"normal with `toeplitz=True`\n"
        f"- speed-up = (fwd+adj) / Toeplitz normal; target >= 5x on CPU\n"
        f"- command: `{cmd}`\n\n{table}\n"
    )
    with RESULTS.open("a") as f:
        if f.tell() == 0:
            f.write("# Benchmark results\n")
        f.write(section)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
