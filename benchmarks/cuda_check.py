"""GPU readiness: run every operator, solver, baseline and the command line on CUDA, print a pass/fail table.

    python -m benchmarks.cuda_check [--quick]

Checks (each one timed, CUDA-synchronised; the whole run is meant to take well under 5 minutes on one GPU):
    * operators: dot-product adjoint test on CUDA of MultiCoilMRI, SingleCoilMRI, CoilwiseMRI, NonCartesianMRI
      (torchkbnufft), WeightedOperator, ParallelBeam2D / FanBeam2D / ConeBeam3D (ASTRA CUDA), and
      `power_iteration` with a CUDA generator;
    * solvers: every method of `solvers.METHODS` on a 64x64 4-coil problem with the bundled MRI prior (12 NFE,
      2 samples), `dds` with bf16 autocast, and `dds` on a CT problem with the bundled CT prior;
    * baselines: MRI zero-filled, CG-SENSE, L1-wavelet, TV, U-Net; non-Cartesian gridding and CG-SENSE;
      CT FBP (FBP_CUDA), SIRT, CGLS, TV, U-Net;
    * ``recon reconstruct`` on the bundled sample with ``--device cuda`` (one slice, dds at 10 NFE, zero-filled).

Every result must stay on the CUDA device and be finite. The check builders take the device as an argument,
so tests/test_devices.py runs the same lists on the CPU (minus the CUDA-only cone beam) to keep them in step
with the package's API. Exit status: 0 when every check passes, 1 when any
fails, and 3, with the message "no CUDA device: ...", on a machine where torch sees no CUDA device (nothing
was checked; a CI job can tell this apart from a failure).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

EXIT_NO_CUDA = 3
NO_CUDA_MESSAGE = "no CUDA device: torch.cuda.is_available() is False, nothing was checked (exit status 3)"
ROOT = Path(__file__).resolve().parents[1]


def _on_device(t: torch.Tensor, dev: torch.device, what: str) -> None:
    assert t.device.type == dev.type, f"{what} is on {t.device}, expected {dev.type}"
    assert bool(torch.isfinite(t).all()), f"{what} has non-finite values"


# ---------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------
def _adjoint(op, tol: float, dev: torch.device) -> str:
    from operators.base import adjointness_error

    err = adjointness_error(op, batch=(2,), device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    assert err < tol, f"adjointness error {err:.2e} >= {tol:g}"
    return f"adjoint err {err:.1e}"


def _mri_parts(dev: torch.device, n: int = 64, coils: int = 4):
    from recon.data.masks import make_mask
    from recon.data.simulate import birdcage_maps

    maps = birdcage_maps(coils, (n, n)).to(dev)
    mask = make_mask("random", (n, n), 4, 0.08, seed=0).mask.to(dev)
    return maps, mask


def operator_checks(dev: torch.device) -> list[tuple[str, Callable[[], str]]]:
    from operators import (ConeBeam3D, CoilwiseMRI, FanBeam2D, MultiCoilMRI, NonCartesianMRI, ParallelBeam2D,
                           SingleCoilMRI, power_iteration, radial, sparse_view_angles)
    from operators.weighted import WeightedOperator

    maps, mask = _mri_parts(dev)
    mc = MultiCoilMRI(maps, mask)

    def power() -> str:
        norm = power_iteration(mc, n_iter=20, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
        assert math.isfinite(norm) and norm > 0, f"norm {norm}"
        return f"||A|| = {norm:.3f}"

    return [
        ("operator MultiCoilMRI", lambda: _adjoint(mc, 1e-4, dev)),
        ("operator SingleCoilMRI", lambda: _adjoint(SingleCoilMRI(mask, (64, 64)), 1e-4, dev)),
        ("operator CoilwiseMRI", lambda: _adjoint(CoilwiseMRI(mask, 4, (64, 64)), 1e-4, dev)),
        ("operator NonCartesianMRI (NUFFT)",
         lambda: _adjoint(NonCartesianMRI(maps, radial(32, 128, device=dev), image_shape=(64, 64)), 1e-3, dev)),
        ("operator WeightedOperator",
         lambda: _adjoint(WeightedOperator(mc, torch.rand(mc.range_shape, device=dev) + 0.5), 1e-4, dev)),
        ("operator ParallelBeam2D (ASTRA CUDA)",
         lambda: _adjoint(ParallelBeam2D((64, 64), sparse_view_angles(30), 91), 5e-2, dev)),
        ("operator FanBeam2D (ASTRA CUDA)",
         lambda: _adjoint(FanBeam2D((64, 64), sparse_view_angles(40, 2 * math.pi), 120, 1.5, 200.0, 100.0), 5e-2, dev)),
        ("operator ConeBeam3D (ASTRA CUDA)",
         lambda: _adjoint(ConeBeam3D((32, 32, 32), sparse_view_angles(8, 2 * math.pi), 33, 33, 1000.0, 0.0), 5e-2, dev)),
        ("power_iteration, CUDA generator", power),
    ]


# ---------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------
def solver_checks(dev: torch.device, nfe: int) -> list[tuple[str, Callable[[], str]]]:
    import solvers
    from operators import MultiCoilMRI, ParallelBeam2D, sparse_view_angles
    from priors.base import InferencePolicy
    from priors.registry import load
    from recon.data.simulate.ct import hu_to_mu

    maps, mask = _mri_parts(dev)
    op = MultiCoilMRI(maps, mask)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(64, 64, dtype=torch.complex64, device=dev, generator=g)
    y = op(x)

    def run(method: str, prior, op_=op, y_=y, scale: float | None = None) -> str:
        t0 = time.perf_counter()
        post = solvers.sample(method, op_, y_, prior, n_samples=2, nfe=nfe, progress=False, scale=scale)
        _on_device(post.mean, dev, f"{method} mean")
        _on_device(post.std, dev, f"{method} std")
        return f"nfe {post.nfe}, network {post.network_time:.2f}/{time.perf_counter() - t0:.2f} s"

    def bf16() -> str:
        prior = load("brain-mri-complex", device=dev)
        prior.inference, prior.bf16_min_sigma = InferencePolicy(chunk=None, bf16=True), 0.0
        return run("dds", prior)

    def ct() -> str:
        c = torch.arange(64, dtype=torch.float32) - 31.5
        hu = torch.where(c[:, None] ** 2 + c[None, :] ** 2 < 25.0**2, 0.0, -1000.0)
        ct_op = ParallelBeam2D((64, 64), sparse_view_angles(30), 91)
        yc = ct_op(hu_to_mu(hu, 0.957).to(dev))
        return run("dds", load("head-ct", device=dev), ct_op, yc, scale=0.0192 * 0.957)

    mri_prior = load("brain-mri-complex", device=dev)
    checks = [(f"solver {m}", (lambda m=m: run(m, mri_prior))) for m in solvers.METHODS]
    return checks + [("solver dds, bf16 autocast", bf16), ("solver dds, CT (ASTRA CUDA inside CG)", ct)]


# ---------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------
def baseline_checks(dev: torch.device) -> list[tuple[str, Callable[[], str]]]:
    from operators import MultiCoilMRI, NonCartesianMRI, ParallelBeam2D, pipe_menon_dcf, radial, sparse_view_angles
    from recon.baselines import ct_analytic, ct_iterative, noncartesian
    from recon.baselines import mri as mri_base
    from recon.baselines import unet as unet_base
    from recon.data.simulate.ct import hu_to_mu
    from solvers.posterior import Posterior

    maps, mask = _mri_parts(dev)
    op = MultiCoilMRI(maps, mask)
    x = torch.randn(64, 64, dtype=torch.complex64, device=dev, generator=torch.Generator(device=dev).manual_seed(1))
    y = op(x)
    traj = radial(32, 128, device=dev)
    nc = NonCartesianMRI(maps, traj, image_shape=(64, 64))
    yn = nc(x)
    c = torch.arange(64, dtype=torch.float32) - 31.5
    hu = torch.where(c[:, None] ** 2 + c[None, :] ** 2 < 25.0**2, 0.0, -1000.0)
    ct_op = ParallelBeam2D((64, 64), sparse_view_angles(30), 91)

    def sino() -> torch.Tensor:
        """The CT checks' sinogram, made inside each CT check: a CT failure must not hide the MRI checks."""
        return ct_op(hu_to_mu(hu, 0.957).to(dev))

    def mean_of(result: Posterior | torch.Tensor, what: str) -> str:
        t = result.mean if isinstance(result, Posterior) else result
        _on_device(t, dev, what)
        return f"shape {tuple(t.shape)}"

    return [
        ("baseline MRI zero-filled", lambda: mean_of(mri_base.zero_filled(op, y), "zero-filled")),
        ("baseline MRI CG-SENSE", lambda: mean_of(mri_base.cg_sense(op, y), "cg-sense")),
        ("baseline MRI L1-wavelet (sigpy)", lambda: mean_of(mri_base.l1_wavelet(op, y, max_iter=10), "l1")),
        ("baseline MRI TV (sigpy)", lambda: mean_of(mri_base.total_variation(op, y, max_iter=10), "tv")),
        ("baseline MRI U-Net", lambda: mean_of(unet_base.unet_mri(y, unet_base.load_unet("unet-brain-mri", dev)),
                                               "unet")),
        ("baseline non-Cartesian gridding",
         lambda: mean_of(noncartesian.gridding(yn, nc, pipe_menon_dcf(traj, (64, 64))), "gridding")),
        ("baseline non-Cartesian CG-SENSE", lambda: mean_of(noncartesian.cg_sense(yn, nc, n_iter=10), "cg-sense nc")),
        ("baseline CT FBP (FBP_CUDA)", lambda: mean_of(ct_analytic.fbp(sino(), ct_op), "fbp")),
        ("baseline CT SIRT", lambda: mean_of(ct_iterative.sirt(sino(), ct_op, n_iter=20), "sirt")),
        ("baseline CT CGLS", lambda: mean_of(ct_iterative.cgls(sino(), ct_op, n_iter=10), "cgls")),
        ("baseline CT TV", lambda: mean_of(ct_iterative.tv_pdhg(sino(), ct_op, n_iter=30), "tv")),
        ("baseline CT U-Net", lambda: mean_of(unet_base.unet_ct(sino(), ct_op, unet_base.load_unet("unet-head-ct", dev),
                                                                unit=0.0192 * 0.957), "unet ct")),
    ]


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------
def cli_check() -> str:
    import json

    from recon.data.demo_sample import SAMPLE

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "recon.cli", "reconstruct", str(SAMPLE), "--out", out, "--device", "cuda",
               "--solver", "dds,zero-filled", "--nfe", "10", "--samples", "2", "--slices", "0:1", "--quiet"]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert res.returncode == 0, f"exit {res.returncode}: {(res.stderr or res.stdout)[-500:]}"
        summary = json.loads(next(Path(out).glob("*.json")).read_text())
        psnr = summary["solvers"]["dds"]["psnr"]
        assert psnr is not None and math.isfinite(psnr), f"dds PSNR {psnr}"
        return f"dds PSNR {psnr:.2f} dB"


# ---------------------------------------------------------------------------
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> list[tuple[str, bool, float, str]]:
    """Run each ``(name, fn)``; fn returns a detail string or raises. Returns (name, passed, seconds, detail) rows."""
    rows = []
    for name, fn in checks:
        _sync()
        t0 = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as e:  # noqa: BLE001 - every failure becomes a table row
            detail, ok = f"{type(e).__name__}: {e}".splitlines()[0][:160], False
            traceback.print_exc(file=sys.stderr)
        _sync()
        rows.append((name, ok, time.perf_counter() - t0, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}  ({rows[-1][2]:.2f} s)  {detail}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run every operator, solver, baseline and the CLI on CUDA.")
    ap.add_argument("--quick", action="store_true", help="skip the `recon reconstruct` subprocess")
    ap.add_argument("--nfe", type=int, default=12, help="network evaluations per solver check")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        return EXIT_NO_CUDA
    dev = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    rows: list[tuple[str, bool, float, str]] = []
    for make in (lambda: operator_checks(dev), lambda: solver_checks(dev, a.nfe), lambda: baseline_checks(dev)):
        try:
            rows += run_checks(make())
        except Exception as e:  # noqa: BLE001 - a failure while setting up a group of checks
            rows.append((f"setup: {e}".splitlines()[0][:80], False, 0.0, type(e).__name__))
    if not a.quick:
        rows += run_checks([("recon reconstruct --device cuda (bundled sample)", cli_check)])
    print(f"\n{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, {time.perf_counter() - t0:.0f} s\n")
    print("| check | result | seconds | detail |\n|---|---|---:|---|")
    for name, ok, sec, detail in rows:
        print(f"| {name} | {'pass' if ok else 'FAIL'} | {sec:.2f} | {detail} |")
    failed = sum(not ok for _, ok, _, _ in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
