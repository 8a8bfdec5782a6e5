"""MultiCoilMRI forward+adjoint and ESPIRiT per slice, next to sigpy's Sense linop, in one run.

A 15-coil 640x368 slice (fastMRI knee size), complex64, random 1D mask at 4x.
Target: our forward+adjoint no slower than sigpy's on the CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import sigpy as sp
import sigpy.mri as spmri
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root
from benchmarks.common import append_results, wall_time  # noqa: E402
from operators import MultiCoilMRI
from operators.espirit import espirit_maps
from recon.data.masks import make_mask
from recon.data.simulate import birdcage_maps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coils", type=int, default=15)
    ap.add_argument("--shape", type=int, nargs=2, default=(640, 368))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
    h, w = a.shape
    maps = birdcage_maps(a.coils, (h, w))
    mask = make_mask("random", (h, w), 4, 0.08, seed=0).mask
    g = torch.Generator().manual_seed(0)
    x = torch.randn(h, w, dtype=torch.complex64, generator=g)
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        op = MultiCoilMRI(maps.to(dev), mask.to(dev))
        xd = x.to(dev)
        t = wall_time(lambda: op.adjoint(op.forward(xd)), a.repeats, sync_cuda=dev == "cuda")
        rows.append((f"diffrecon MultiCoilMRI forward+adjoint ({dev})", t))
    # sigpy Sense linop: maps [C, H, W], weights = mask, same centred orthonormal FFT
    S = spmri.linop.Sense(maps.numpy(), weights=np.broadcast_to(mask.numpy(), (h, w)).astype(np.float32))
    xn = x.numpy()
    t_sp = wall_time(lambda: S.H(S(xn)), a.repeats)
    rows.append(("sigpy Sense forward+adjoint (cpu)", t_sp))
    k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(maps * x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)) * mask
    t_esp = wall_time(lambda: espirit_maps(k, calib_width=24), max(1, a.repeats // 2))
    rows.append(("ESPIRiT espirit_maps, 1 set (cpu)", t_esp))
    t_esp2 = wall_time(lambda: espirit_maps(k, calib_width=24, n_maps=2), max(1, a.repeats // 2))
    rows.append(("ESPIRiT espirit_maps, 2 sets (cpu)", t_esp2))
    ratio = t_sp / rows[0][1]
    table = "| what | time per slice (ms) |\n|---|---:|\n" + "\n".join(f"| {n} | {t * 1e3:.1f} |" for n, t in rows)
    notes = (f"{a.coils} coils, {h}x{w}, complex64, torch threads {torch.get_num_threads()}. "
             f"sigpy / ours (CPU forward+adjoint) = {ratio:.2f} (target >= 1).")
    if a.no_append:
        print(table, "\n", notes)
    else:
        append_results("Cartesian MRI operator and ESPIRiT (issue: MRI foundation)", table, notes)


if __name__ == "__main__":
    main()
