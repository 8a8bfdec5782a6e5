"""Per solver: wall time split into network time and everything else, 8 samples of a 256x256 8-coil slice.

The split does not depend on the network's weights, so the bundled prior is used when it exists and
an untrained network of the same architecture otherwise. Target: everything-but-network <= 10 % of the
wall time for `dds` and `projection`.

``--targets``: the inference-speed targets, old and new paths in the same run on the same machine:
    * MRI dds (256x256, 8 coils, 50 NFE): 8 samples cost <= 8x one sample, and the default path is >= 3x
      faster than the old one (`priors.base.FULL_BATCH_FP32`: the whole batch per network call, float32);
    * CT dds (256x256 head-CT validation slice 78, 60 views, 8 samples): time outside the network <= 25 % on
      the CPU (new: CPU batches through ASTRA's projection matrix; old: one ASTRA call per slice, ``cpu_matrix=False``).
    OMP_NUM_THREADS=1 python -m benchmarks.solvers --targets [--nfe 50] --no-append
``--policies``: seconds per image of the denoiser per chunk size and precision (the per-device rule's evidence).
"""
from __future__ import annotations

import argparse

import torch

import solvers
from benchmarks.common import append_results
from operators import MultiCoilMRI
from priors.base import EDMPrior, PriorInfo
from recon.data.masks import make_mask
from recon.data.simulate import birdcage_maps


def _prior(device: str):
    try:
        from priors.registry import load
        return load("brain-mri-complex", device=device), "bundled brain-mri-complex"
    except Exception:  # noqa: BLE001 - fall back to an untrained net of the default architecture
        from priors.networks.unet import UNet, UNetConfig
        net = UNet(**UNetConfig().to_dict()).to(device).eval()
        return EDMPrior(net, PriorInfo(name="untrained", sigma_max=20.0)), "untrained UNet (default config)"


def _mri_problem(n: int, device: str):
    maps = birdcage_maps(8, (n, n)).to(device)
    mask = make_mask("random", (n, n), 4, 0.08, seed=0).mask.to(device)
    op = MultiCoilMRI(maps, mask)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, dtype=torch.complex64, generator=g).to(device)
    return op, op(x)


def _ct_problem(device: str, matrix: bool | None):
    """Head-CT validation slice 78 (a disk phantom when the data are absent), 60 parallel views, in attenuation per pixel."""
    import math

    from operators.ct import ParallelBeam2D, sparse_view_angles
    from recon.data.simulate.ct import MU_WATER_PER_MM, hu_to_mu
    try:
        from recon.data.ct_slices import ct_slices
        hu, pixel, what = torch.from_numpy(ct_slices("val", hu=True)[78 - 72]), 0.957, "head-CT validation slice 78"
    except Exception:  # noqa: BLE001 - no shared data: a water disk in air
        c = torch.arange(256, dtype=torch.float32) - 127.5
        hu = torch.where(c[:, None] ** 2 + c[None, :] ** 2 < 100.0**2, 0.0, -1000.0)
        pixel, what = 0.957, "water disk phantom"
    op = ParallelBeam2D((256, 256), sparse_view_angles(60), math.ceil(256 * math.sqrt(2)), cpu_matrix=matrix)
    y = op(hu_to_mu(hu, pixel)).to(device)
    return op, y, MU_WATER_PER_MM * pixel, what


def _ct_prior(device: str):
    try:
        from priors.registry import load
        return load("head-ct", device=device)
    except Exception:  # noqa: BLE001
        from priors.networks.unet import UNet, UNetConfig
        cfg = UNetConfig().to_dict() | {"in_channels": 1, "out_channels": 1}
        return EDMPrior(UNet(**cfg).to(device).eval(), PriorInfo(name="untrained", value_kind="real", sigma_max=20.0))


def targets(nfe: int, samples: int, device: str) -> tuple[str, str]:
    """The speed targets (see the module docstring): a markdown table and notes."""
    from priors.base import FULL_BATCH_FP32

    rows = []
    op, y = _mri_problem(256, device)
    prior, desc = _prior(device)

    def run(n_samples: int, policy, op_=op, y_=y, prior_=prior, scale=1.0):
        prior_.inference = policy
        return solvers.sample("dds", op_, y_, prior_, n_samples=n_samples, nfe=nfe, progress=False, scale=scale)

    one = run(1, None)
    new = run(samples, None)
    old = run(samples, FULL_BATCH_FP32, prior_=_prior(device)[0])  # a fresh copy: weights in the default layout
    rows.append(("MRI dds, 1 sample (default)", one))
    rows.append((f"MRI dds, {samples} samples (default: chunks of 1, bf16 where checked, channels-last)", new))
    rows.append((f"MRI dds, {samples} samples (old: whole batch, float32)", old))
    ratio_n = new.wall_time / one.wall_time
    speedup = old.wall_time / new.wall_time
    op_ct, y_ct, unit, what = _ct_problem(device, None)
    op_old, _, _, _ = _ct_problem(device, False)
    ct_prior = _ct_prior(device)
    ct_new = run(samples, None, op_ct, y_ct, ct_prior, unit)
    ct_old = run(samples, FULL_BATCH_FP32, op_old, y_ct, _ct_prior(device), unit)
    rows.append((f"CT dds, {samples} samples (default: projection matrix, chunks of 1, bf16 where checked)", ct_new))
    rows.append((f"CT dds, {samples} samples (old: ASTRA per slice, whole batch float32)", ct_old))
    frac = 1 - ct_new.network_time / ct_new.wall_time
    table = ("| run | NFE | wall (s) | network (s) | outside network |\n|---|---:|---:|---:|---:|\n"
             + "\n".join(f"| {lab} | {p.nfe} | {p.wall_time:.1f} | {p.network_time:.1f} | "
                          f"{1 - p.network_time / p.wall_time:.0%} |" for lab, p in rows))
    checks = [(f"{samples} samples / 1 sample wall time <= {samples}", ratio_n, ratio_n <= samples),
              ("old / new wall time, MRI dds (>= 3)", speedup, speedup >= 3.0),
              ("CT dds time outside the network (<= 0.25)", frac, frac <= 0.25)]
    table += "\n\n| target | measured | pass |\n|---|---:|---|\n" + "\n".join(
        f"| {t} | {v:.2f} | {'yes' if ok else 'NO'} |" for t, v, ok in checks)
    notes = (f"device {device}, MRI: 256x256, 8 birdcage coils, random 4x, prior {desc}; CT: {what}, 60 views, "
             f"prior {ct_prior.info.name}; {nfe} NFE; old and new paths in the same run.")
    return table, notes


def policies(samples: int, device: str, repeats: int = 2) -> tuple[str, str]:
    """Seconds per image of the prior's denoiser on a batch of `samples` 256x256 images, per inference policy
    (interleaved, best of `repeats`, so load drifts hit every policy alike)."""
    import time

    from priors.base import InferencePolicy

    prior, desc = _prior(device)
    x = torch.randn(samples, 256, 256, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)).to(device)
    pols = [InferencePolicy(None, False), InferencePolicy(1, False), InferencePolicy(2, False),
            InferencePolicy(None, True), InferencePolicy(2, True), InferencePolicy(1, True)]
    best = {p: float("inf") for p in pols}
    with torch.no_grad():
        for _ in range(repeats):
            for pol in pols:
                prior.inference = pol
                t0 = time.perf_counter()
                prior.denoise(x, 1.0)
                best[pol] = min(best[pol], (time.perf_counter() - t0) / samples)
    table = ("| chunk | bf16 | s per image |\n|---|---|---:|\n"
             + "\n".join(f"| {p.chunk or 'all'} | {'yes' if p.bf16 else 'no'} | {t:.3f} |" for p, t in best.items()))
    return table, f"{samples} images 256x256 at sigma 1, device {device}, prior {desc}, best of {repeats}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfe", type=int, default=None,
                    help="network evaluations per method (default 20; 50 with --targets; CPU: keep it small)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--methods", default="dds,projection,score_ald,dps,ccdf")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--targets", action="store_true", help="the inference-speed targets (see the module docstring)")
    ap.add_argument("--policies", action="store_true", help="denoiser seconds per image per chunk size / precision")
    a = ap.parse_args()
    if a.policies:
        table, notes = policies(a.samples, a.device)
        if a.no_append:
            print(table + "\n\n" + notes)
        else:
            append_results("Denoiser inference policies", table, notes)
        return
    if a.targets:
        table, notes = targets(50 if a.nfe is None else a.nfe, a.samples, a.device)
        if a.no_append:
            print(table + "\n\n" + notes)
        else:
            append_results("Inference speed targets: chunks, bf16, CT projection matrix", table, notes)
        return
    a.nfe = 20 if a.nfe is None else a.nfe
    n = a.size
    maps = birdcage_maps(8, (n, n)).to(a.device)
    mask = make_mask("random", (n, n), 4, 0.08, seed=0).mask.to(a.device)
    op = MultiCoilMRI(maps, mask)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, n, dtype=torch.complex64, generator=g).to(a.device)
    y = op(x)
    prior, prior_desc = _prior(a.device)
    rows = []
    for m in a.methods.split(","):
        nfe = a.nfe if m != "score_ald" else max(a.nfe, 3)
        post = solvers.sample(m, op, y, prior, n_samples=a.samples, nfe=nfe, progress=False, scale=1.0)
        other = post.wall_time - post.network_time
        rows.append((m, post.nfe, post.wall_time, post.network_time, other, other / post.wall_time))
    table = ("| method | NFE | wall (s) | network (s) | everything else (s) | else fraction |\n|---|---:|---:|---:|---:|---:|\n"
             + "\n".join(f"| {m} | {k} | {w:.1f} | {nt:.1f} | {o:.1f} | {f:.1%} |" for m, k, w, nt, o, f in rows))
    notes = (f"{a.samples} samples, {n}x{n}, 8 coils, random 1D 4x, device {a.device}, prior: {prior_desc}. "
             "Target: else fraction <= 10% for dds and projection.")
    if a.no_append:
        print(table + "\n\n" + notes)
    else:
        append_results("Solver time split: network vs everything else (issue: solvers)", table, notes)


if __name__ == "__main__":
    main()
