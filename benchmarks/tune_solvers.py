"""Hyper-parameter sweeps for the posterior samplers on *validation* data only.

MRI: BrainWeb validation subjects 49 and 50 (T1w, simulated with 8 birdcage coils), random 1D 4x.
CT: head-CT validation slices 72..83, 60 parallel views. The sweep table (mean PSNR per setting) is
appended to benchmarks/RESULTS.md; the best values become the methods' documented defaults.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from benchmarks.common import append_results
from recon import metrics
from recon.brainweb import BRAINWEB_VAL, brainweb_slices
from recon.ct_problem import HU_RANGE, CTSpec, metric_image, simulated_ct_problem
from recon.ct_slices import ct_slices
from recon.io import center_crop, default_header
from recon.methods import MethodSettings, run_method
from recon.problem import MaskSpec, prepare_mri_slice
from recon.simulate import simulate_multicoil

SWEEPS: dict[str, dict[str, list]] = {
    "dds": {"eta": [0.5, 0.85, 1.0], "cg_iters": [3, 5]},
    "projection": {"snr": [0.08, 0.16], "lam": [0.5, 1.0]},
    "score-ald": {"step_scale": [0.05, 0.1, 0.3]},
    "dps": {"zeta": [0.3, 1.0, 3.0]},
    "ccdf": {"sigma_start": [0.2, 0.5, 1.0]},
}


def mri_problems(n_per_subject: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for subject in BRAINWEB_VAL:
        imgs = center_crop(torch.from_numpy(brainweb_slices(subject, "T1w", rng, n_slices=n_per_subject + 2)[1:-1]),
                           (size, size))
        for img in imgs:
            k, _, _ = simulate_multicoil(img, n_coils=8, noise_std=0.002, add_phase=False, seed=subject)
            out.append(prepare_mri_slice(k, default_header(tuple(k.shape)), MaskSpec("random", 4, 0.08, seed)))
    return out


def ct_problems(n: int):
    hu = ct_slices("val", hu=True)
    idx = np.linspace(0, len(hu) - 1, n).round().astype(int)
    return [simulated_ct_problem(hu[i], 0.957, CTSpec(views=60)) for i in idx]


def score(problem, post) -> float:
    if hasattr(problem, "to_hu"):
        return metrics.psnr(metric_image(problem.reference_hu.numpy()), metric_image(problem.to_hu(post.mean).numpy()), HU_RANGE)
    return metrics.psnr(problem.reference, problem.magnitude(post.mean))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", choices=["mri", "ct"], default="mri")
    ap.add_argument("--methods", default=",".join(SWEEPS))
    ap.add_argument("--slices", type=int, default=1, help="MRI: slices per validation subject; CT: slices")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--nfe", type=int, default=None, help="override every method's default NFE")
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
    from priors.registry import load
    prior = load("brain-mri-complex" if a.modality == "mri" else "head-ct")
    problems = mri_problems(a.slices, a.size) if a.modality == "mri" else ct_problems(a.slices)
    rows = []
    for method in a.methods.split(","):
        grid = SWEEPS[method]
        for values in itertools.product(*grid.values()):
            hp = dict(zip(grid.keys(), values))
            settings = MethodSettings(prior=prior, n_samples=a.samples, nfe=a.nfe, progress=False,
                                      hparams={method: hp})
            t0 = time.perf_counter()
            psnrs = [score(p, run_method(method, p, settings)) for p in problems]
            rows.append((method, hp, float(np.mean(psnrs)), time.perf_counter() - t0))
            print(rows[-1], flush=True)
    table = "| method | setting | mean PSNR (dB) | time (s) |\n|---|---|---:|---:|\n" + "\n".join(
        f"| {m} | {', '.join(f'{k}={v}' for k, v in hp.items())} | {p:.2f} | {t:.0f} |" for m, hp, p, t in rows)
    notes = (f"{a.modality.upper()} validation data ({'BrainWeb 49, 50, random 1D 4x' if a.modality == 'mri' else 'head CT 72..83, 60 views'}), "
             f"{len(problems)} slices, {a.samples} samples, NFE {a.nfe or 'default'}.")
    if a.no_append:
        print(table + "\n" + notes)
    else:
        append_results(f"Solver hyper-parameter sweep on validation data ({a.modality.upper()})", table, notes)


if __name__ == "__main__":
    main()
