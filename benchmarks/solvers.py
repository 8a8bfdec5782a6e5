"""Per solver: wall time split into network time and everything else, 8 samples of a 256x256 8-coil slice.

The split does not depend on the network's weights, so the bundled prior is used when it exists and
an untrained network of the same architecture otherwise. Target: everything-but-network <= 10 % of the
wall time for `dds` and `projection`.
"""
from __future__ import annotations

import argparse

import torch

import solvers
from benchmarks.common import append_results
from operators import MultiCoilMRI
from priors.base import EDMPrior, PriorInfo
from recon.masks import make_mask
from recon.simulate import birdcage_maps


def _prior(device: str):
    try:
        from priors.registry import load
        return load("brain-mri-complex", device=device), "bundled brain-mri-complex"
    except Exception:  # noqa: BLE001 - fall back to an untrained net of the default architecture
        from priors.networks.unet import UNet, UNetConfig
        net = UNet(**UNetConfig().to_dict()).to(device).eval()
        return EDMPrior(net, PriorInfo(name="untrained", sigma_max=20.0)), "untrained UNet (default config)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfe", type=int, default=20, help="network evaluations per method (CPU: keep it small)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--methods", default="dds,projection,score_ald,dps,ccdf")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
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
