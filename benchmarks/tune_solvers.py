"""Hyper-parameter sweeps for the posterior samplers, on *validation* data only.

The cases are built exactly as `recon benchmark` builds its test cases (`recon.benchmark`), from the
validation splits instead: BrainWeb subjects 49 and 50 (T1w, 8 birdcage coils, central 144 x 120 of
k-space, ESPIRiT maps from 24 central lines) and head-CT slices 72..83 (centre 128 x 128, parallel beam).
Each (method, setting, hyper-parameters) run is appended as one JSON line to ``--out`` as soon as it ends,
so an interrupted sweep keeps what it measured and ``--resume`` skips what is there. ``--report`` turns
one or more such files into a table (mean PSNR / SSIM per configuration and setting) appended to
benchmarks/RESULTS.md.

    python -m benchmarks.tune_solvers --modality mri --methods dds,ccdf --settings random-4x,random-8x \\
        --out benchmarks/results/tuning/mri-dds.jsonl
    python -m benchmarks.tune_solvers --report benchmarks/results/tuning/*.jsonl

Noisy sweeps (``--noise-std 0.002,0.0035,0.007``): each level is a separate simulation of the validation
slices with complex k-space noise of that std per real/imaginary part (p99(|x|) = 1 images; the noise is
drawn from the same seed at every level, so levels differ only in amplitude). The posterior samplers are
then given the true ``sigma_y`` (= the level, in data units) through ``solvers.sample``; ``--baselines``
adds classical rows (zero-filled, l1-wavelet, ...) run on the same cases at their defaults, and a classical
method in ``--methods`` sweeps its own ``--grid`` (e.g. ``--methods l1-wavelet --grid lam=0.001,0.004``); a
``sigma_y`` entry in ``--grid`` sets the values passed (``null`` = the true level; ``sigma_y=0`` reproduces a
sampler that ignores the noise). Records carry ``noise_std`` and ``sigma_y``, and the report shows one column
per (setting, noise level).

    python -m benchmarks.tune_solvers --methods dds --settings random-4x,random-8x \
        --noise-std 0.002,0.0035,0.007 --grid gamma_scale=0.25,0.5,1.0 --baselines zero-filled,l1-wavelet \
        --out benchmarks/results/tuning/mri-noise-dds.jsonl
"""
from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from recon import benchmark as bench
from recon.data.brainweb import BRAINWEB_VAL
from recon.data.ct_slices import CT_VAL
from recon.methods import POSTERIOR_METHODS, MethodConfig

# Grids; each includes the method's current default so the table shows what a change buys.
SWEEPS: dict[str, dict[str, list[Any]]] = {
    "dds": {"eta": [0.5, 0.85, 1.0], "cg_iters": [3, 5, 10]},
    "ccdf": {"sigma_start": [0.2, 0.5, 1.0, 2.0]},
    "projection": {"snr": [0.08, 0.16, 0.32]},
    "score-ald": {"step_scale": [0.1, 0.3, 1.0]},
    "dps": {"cg_iters": [2, 3, 5]},
}
# Hyper-parameters whose meaning changes with the measurement noise (swept by --noise-std runs).
NOISE_SWEEPS: dict[str, dict[str, list[Any]]] = {
    "dds": {"gamma_scale": [0.25, 0.5, 1.0]},
    "projection": {"snr": [0.16, 0.32]},
    "ccdf": {"sigma_start": [0.1, 0.5]},
    "dps": {"cg_iters": [2, 3, 5]},
    "score-ald": {"gamma_scale": [0.5, 1.0]},
}
MRI_KSPACE = (144, 120)       # as both benchmark presets
CT_SIZE = (128, 128)          # as the quick preset


def configurations(method: str, override: dict[str, list[Any]] | None = None) -> Iterator[dict[str, Any]]:
    grid = {**SWEEPS[method], **(override or {})}
    for values in itertools.product(*grid.values()):
        yield dict(zip(grid.keys(), values))


def cases(modality: str, settings: list[str], n: int, device: torch.device,
          noise_std: float | None = None) -> list[bench.Case]:
    """Validation cases: MRI `n` slices per BrainWeb validation subject (k-space noise std `noise_std` per part,
    default the benchmark's); CT `n` evenly spaced slices."""
    if modality == "mri":
        noise = bench.QUICK.mri_noise_std if noise_std is None else noise_std
        sources = bench.brainweb_sources(BRAINWEB_VAL, n, MRI_KSPACE, noise)
        table = {s.name: s for s in bench.MRI_SETTINGS}
        return [bench.mri_case(src, table[name], i, device) for name in settings for i, src in enumerate(sources)]
    idx = [CT_VAL[int(round(j))] for j in np.linspace(0, len(CT_VAL) - 1, n)]
    sources = bench.ct_sources(idx, CT_SIZE, split="val")
    table = {s.name: s for s in bench.CT_SETTINGS}
    return [bench.ct_case(src, table[name], i, device) for name in settings for i, src in enumerate(sources)]


DEFAULT_SAMPLES = 4  # the sweep's --samples default; records written before they recorded it were made with it


def sample_count(method: str, samples: int) -> int | None:
    """Posterior samples a run of `method` draws with ``--samples`` (None for a classical method)."""
    return samples if method in POSTERIOR_METHODS else None


def samples_of(rec: dict[str, Any]) -> int | None:
    """`sample_count` of a record's run."""
    return sample_count(rec["method"], rec.get("n_samples", DEFAULT_SAMPLES))


def _key(rec: dict[str, Any]) -> tuple:
    return (rec["method"], json.dumps(rec["hparams"], sort_keys=True), rec["setting"], rec["case"], rec["nfe_request"],
            rec.get("noise_std"), samples_of(rec))


def sweep(args: argparse.Namespace) -> None:
    from priors.registry import load

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.resume and out.exists():
        done = {_key(json.loads(line)) for line in out.read_text().splitlines() if line.strip()}
    prior = load("brain-mri-complex" if args.modality == "mri" else "head-ct")
    device = torch.device("cpu")
    all_cases = cases(args.modality, args.settings.split(","), args.slices, device)
    if args.max_cases:
        per_setting: dict[str, int] = defaultdict(int)
        kept = []
        for c in all_cases:
            per_setting[c.setting] += 1
            if per_setting[c.setting] <= args.max_cases:
                kept.append(c)
        all_cases = kept
    settings = MethodConfig(prior=prior, n_samples=args.samples, seed=0, progress=False)
    override = parse_grid(args.grid)
    for method in args.methods.split(","):
        for hp in configurations(method, override):
            for case in all_cases:
                run = bench.MethodRun(method, method, args.nfe, tuple(hp.items()))
                rec0 = {"method": method, "hparams": hp, "setting": case.setting, "case": case.name,
                        "nfe_request": args.nfe, "n_samples": sample_count(method, args.samples)}
                if _key(rec0) in done:
                    continue
                o = bench.execute(run, case, settings)
                rec, _ = bench.score(run, case, o)
                rec.update(rec0)
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{method:<11} {json.dumps(hp):<32} {case.setting:<14} {case.name:<18} "
                      f"PSNR {rec['psnr']:.2f}  nfe {rec['nfe']}  {rec['wall_s']:.0f} s", flush=True)


def execute_noisy(method: str, hp: dict[str, Any], case: bench.Case, settings: MethodConfig, nfe: int | None,
                  sigma_y: float) -> bench.Outcome:
    """`bench.execute` for a posterior sampler given the measurement noise std `sigma_y` (data units)."""
    import time

    import solvers

    p = case.problem
    t0 = time.perf_counter()
    post = solvers.sample(method, p.op, p.y, settings.prior, n_samples=settings.n_samples, nfe=nfe,
                          seed=settings.seed, progress=False, sigma_y=sigma_y, **hp)
    wall = time.perf_counter() - t0
    mean = case.display(post.mean).float().cpu().numpy()
    std = case.display(post.samples).float().std(0).cpu().numpy() if post.samples.shape[0] > 1 else None
    return bench.Outcome(mean, std, int(post.nfe), wall, float(post.network_time), 0.0, 0.0, "not measured")


def noisy_sweep(args: argparse.Namespace) -> None:
    """The sweep at each level of ``--noise-std``, samplers given sigma_y, plus ``--baselines`` rows."""
    from priors.registry import load

    if args.modality != "mri":
        raise SystemExit("--noise-std applies to MRI (CT noise is set by the photon count of a CT setting)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.resume and out.exists():
        done = {_key(json.loads(line)) for line in out.read_text().splitlines() if line.strip()}
    prior = load("brain-mri-complex")
    settings = MethodConfig(prior=prior, n_samples=args.samples, seed=0, progress=False)
    override = parse_grid(args.grid)
    sy_override = override.pop("sigma_y", None)
    baselines = [b for b in (args.baselines or "").split(",") if b]
    for noise in [float(v) for v in args.noise_std.split(",")]:
        all_cases = cases("mri", args.settings.split(","), args.slices, torch.device("cpu"), noise_std=noise)
        jobs: list[tuple[str, dict[str, Any], float | None]] = [(b, {}, None) for b in baselines]
        for method in args.methods.split(","):
            grid = {**NOISE_SWEEPS.get(method, {}), **override}
            for values in itertools.product(*grid.values()):
                hp = dict(zip(grid.keys(), values))
                if method not in POSTERIOR_METHODS:   # a classical method's own weights (e.g. l1-wavelet lam)
                    jobs.append((method, hp, None))
                    continue
                jobs += [(method, hp, noise if sy is None else sy) for sy in (sy_override or [None])]
        for method, hp, sigma_y in jobs:
            for case in all_cases:
                hp_rec = hp if sigma_y is None or sigma_y == noise else {**hp, "sigma_y": sigma_y}
                rec0 = {"method": method, "hparams": hp_rec, "setting": case.setting, "case": case.name,
                        "nfe_request": args.nfe if sigma_y is not None else None, "noise_std": noise,
                        "n_samples": sample_count(method, args.samples)}
                if _key(rec0) in done:
                    continue
                run = bench.MethodRun(method, method, args.nfe if sigma_y is not None else None, tuple(hp.items()))
                if sigma_y is None:
                    o = bench.execute(run, case, settings)
                else:
                    o = execute_noisy(method, hp, case, settings, args.nfe, sigma_y)
                rec, _ = bench.score(run, case, o)
                rec.update(rec0, sigma_y=sigma_y)
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"noise {noise:<7g} {method:<11} {json.dumps(hp_rec):<32} {case.setting:<10} {case.name:<16} "
                      f"PSNR {rec['psnr']:.2f}  nfe {rec['nfe']}  {rec['wall_s']:.0f} s", flush=True)


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``["cg_iters=5,10", "eta=0.85"]`` -> ``{"cg_iters": [5, 10], "eta": [0.85]}`` (values read as JSON)."""
    out: dict[str, list[Any]] = {}
    for item in items or []:
        name, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"--grid expects NAME=V1,V2,..., got '{item}'")
        out[name] = [json.loads(v) for v in values.split(",")]
    return out


def report(files: list[str], append: bool) -> str:
    recs = [json.loads(line) for f in files for line in Path(f).read_text().splitlines() if line.strip()]
    groups: dict[tuple, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[tuple, dict[str, Any]] = {}
    settings: list[str] = []
    for r in recs:
        key = (r["modality"], r["method"], json.dumps(r["hparams"], sort_keys=True), samples_of(r))
        col = r["setting"] if r.get("noise_std") is None else f"{r['setting']} noise {r['noise_std']:g}"
        groups[key][col].append((r["psnr"], r["ssim"]))
        meta.setdefault(key, {"nfe": r["nfe"], "wall": []})["wall"].append(r["wall_s"])
        if col not in settings:
            settings.append(col)
    lines = ["| modality | method | hyper-parameters | NFE | " + " | ".join(settings) + " | s / run |",
             "|---|---|---|---:|" + "---:|" * len(settings) + "---:|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], tuple(json.loads(k[2]).values()), k[3] or 0)):
        mod, method, hp, n_samples = key
        cells = []
        for s in settings:
            v = groups[key].get(s)
            cells.append("–" if not v else f"{np.mean([p for p, _ in v]):.2f} / {np.mean([q for _, q in v]):.3f} ({len(v)})")
        hp_txt = ", ".join([f"{k}={v}" for k, v in json.loads(hp).items()]
                           + ([f"{n_samples} samples"] if n_samples not in (None, DEFAULT_SAMPLES) else []))
        lines.append(f"| {mod} | {method} | {hp_txt} | {meta[key]['nfe']} | " + " | ".join(cells)
                     + f" | {np.mean(meta[key]['wall']):.0f} |")
    table = "\n".join(lines)
    if append:
        from benchmarks.common import append_results
        append_results("Solver hyper-parameter sweep on validation data", table,
                       "Mean PSNR (dB) / SSIM over the validation cases (count in parentheses), fastMRI convention "
                       "(MRI magnitude; CT on HU clipped to [-1024, 2000]). MRI: BrainWeb 49 and 50, 8 coils, "
                       "central 144 x 120 of k-space; CT: head slices 72..83 (evenly spaced), 128 x 128, noiseless "
                       "parallel beam. 4 posterior samples unless a row says otherwise, sampler seed 0, mask seed = case index, "
                       "1 torch thread per run. Raw records: benchmarks/results/tuning/*.jsonl.")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=["mri", "ct"], default="mri")
    ap.add_argument("--methods", default=",".join(SWEEPS))
    ap.add_argument("--settings", default=None, help="benchmark setting names (default: random-8x / sparse-60)")
    ap.add_argument("--slices", type=int, default=1, help="MRI: slices per validation subject; CT: slices")
    ap.add_argument("--max-cases", type=int, default=None, help="first N cases per setting only (costly methods)")
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    ap.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                    help="replace one hyper-parameter's grid (repeatable; applies to every method swept)")
    ap.add_argument("--nfe", type=int, default=None, help="override every method's default NFE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--noise-std", default=None,
                    help="MRI: comma-separated k-space noise stds per part; samplers get sigma_y = the level")
    ap.add_argument("--baselines", default=None, help="with --noise-std: classical methods to run on the same cases")
    ap.add_argument("--out", default="benchmarks/results/tuning/sweep.jsonl")
    ap.add_argument("--resume", action="store_true", help="skip runs already in --out")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="summarise these files instead of sweeping")
    ap.add_argument("--no-append", action="store_true", help="with --report: print, do not touch RESULTS.md")
    a = ap.parse_args()
    if a.report:
        print(report(a.report, append=not a.no_append))
        return
    torch.set_num_threads(a.threads)
    a.settings = a.settings or ("random-8x" if a.modality == "mri" else "sparse-60")
    if a.noise_std:
        noisy_sweep(a)
        return
    sweep(a)


if __name__ == "__main__":
    main()
