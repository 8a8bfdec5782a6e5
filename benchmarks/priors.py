"""Held-out denoising of our bundled priors next to TV, unconditional samples, bundling.

    python benchmarks/priors.py                      # evaluate the bundled priors, append to RESULTS.md
    python benchmarks/priors.py --bundle brain-mri-complex=runs/brain-mri-complex \
                                --bundle head-ct=runs/head-ct   # export EMA weights, sha256, model cards first
    python benchmarks/priors.py --make-heldout       # write priors/weights/heldout_crops.npz

Held-out data: BrainWeb test subjects 51..54 simulated as for training (T1w/T2w/PDw, complex,
p99 = 1) and head-CT test slices 84..107 (x = (HU + 1000) / 1000). For sigma in
{0.02, 0.05, 0.1, 0.2} (noise std of each real/imaginary part, in the prior's scale) we report
the mean PSNR of the noisy input, of `skimage.restoration.denoise_tv_chambolle` with its best
weight per sigma (chosen on the same images: an oracle in TV's favour; real and imaginary parts
as two channels) and of the prior's one-step MMSE denoiser ``prior.denoise(y, sigma)``.
PSNR per image with peak = max |clean|, averaged over images.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from priors.base import Prior, standard_noise  # noqa: E402
from priors.registry import REGISTRY_FILE, WEIGHTS_DIR, available, load, read_registry  # noqa: E402
from recon.data.brainweb import BRAINWEB_TEST, CONTRASTS, SHARED_DATA, brainweb_slices  # noqa: E402
from recon.data.ct_slices import CT_TEST, ct_slices  # noqa: E402

SIGMAS = (0.02, 0.05, 0.1, 0.2)
TV_FACTORS = (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)  # TV weight = factor * sigma
HELDOUT_FILE = WEIGHTS_DIR / "heldout_crops.npz"
DESCRIPTIONS = {
    "brain-mri-complex": "complex brain MR images (BrainWeb train subjects, T1w/T2w/PDw, + Colin27), p99 = 1",
    "head-ct": "head CT slices, x = (HU + 1000) / 1000 (water 1, air 0)",
}


# ---------------------------------------------------------------------------
# held-out data
# ---------------------------------------------------------------------------
def heldout_brain(slices_per_contrast: int = 1, root: Path = SHARED_DATA) -> np.ndarray:
    """BrainWeb test subjects x T1w/T2w/PDw x slices (evenly spaced, ends dropped): complex64 [N, 217, 181]."""
    from recon.data.brainweb import load_brainweb_labels

    out = []
    for s in BRAINWEB_TEST:
        labels = load_brainweb_labels(s, root)
        for ci, c in enumerate(CONTRASTS):
            rng = np.random.default_rng([5000 + s, ci])
            imgs = brainweb_slices(s, c, rng, n_slices=slices_per_contrast + 2, root=root, labels=labels)
            out.extend(imgs[1:-1])
    return np.stack(out)


def heldout_ct(step: int = 1, root: Path = SHARED_DATA) -> np.ndarray:
    """Head-CT test slices 84..107 (every ``step``-th), float32 [N, 256, 256] in the prior scale."""
    return ct_slices("test", root)[::step]


def make_heldout_crops(path: Path = HELDOUT_FILE, root: Path = SHARED_DATA) -> Path:
    """Write the small held-out sample shipped with the project: 64x64 crops of BrainWeb test
    subjects (complex, p99 of the whole slice = 1) and of head-CT test slices (prior scale)."""
    brain = []
    for k, s in enumerate(BRAINWEB_TEST):
        c = list(CONTRASTS)[k % 3]
        img = brainweb_slices(s, c, np.random.default_rng([7000 + s]), n_slices=3, root=root)[1]
        i0, j0 = img.shape[0] // 2 - 32 + (k - 2) * 12, img.shape[1] // 2 - 32
        brain.append(img[i0: i0 + 64, j0: j0 + 64])
    ct = ct_slices("test", root)
    picks = [(2, 96, 96), (5, 44, 96), (8, 96, 140), (13, 80, 96)]  # (slice in test split, row, col)
    cts = [ct[i, r: r + 64, c: c + 64] for i, r, c in picks]
    np.savez_compressed(
        path, brain=np.stack(brain).astype(np.complex64), ct=np.stack(cts).astype(np.float32),
        brain_source=np.array([f"BrainWeb subject {s}, {list(CONTRASTS)[k % 3]}" for k, s in enumerate(BRAINWEB_TEST)]),
        ct_source=np.array([f"head CT test slice {CT_TEST[i]}, rows {r}:{r + 64}, cols {c}:{c + 64}" for i, r, c in picks]),
    )
    return path


# ---------------------------------------------------------------------------
# metrics and denoisers
# ---------------------------------------------------------------------------
def psnr(ref: np.ndarray, est: np.ndarray) -> float:
    """Mean over images of 10 log10(max|ref|^2 / mean|ref - est|^2); ref, est: [N, H, W]."""
    peak = np.abs(ref).reshape(len(ref), -1).max(1)
    mse = (np.abs(ref - est) ** 2).reshape(len(ref), -1).mean(1)
    return float(np.mean(10 * np.log10(peak**2 / mse)))


def noisy_copy(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return (torch.from_numpy(x) + sigma * standard_noise(torch.from_numpy(x), g)).numpy()


@torch.no_grad()
def prior_denoise(prior: Prior, y: np.ndarray, sigma: float, batch: int = 4) -> np.ndarray:
    out = [prior.denoise(torch.from_numpy(y[i: i + batch]), sigma).numpy() for i in range(0, len(y), batch)]
    return np.concatenate(out)


def tv_denoise(y: np.ndarray, weight: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    if np.iscomplexobj(y):
        out = [denoise_tv_chambolle(np.stack([im.real, im.imag], -1), weight=weight, channel_axis=-1) for im in y]
        return np.stack([o[..., 0] + 1j * o[..., 1] for o in out]).astype(np.complex64)
    return np.stack([denoise_tv_chambolle(im, weight=weight) for im in y]).astype(np.float32)


def denoising_table(prior: Prior, x: np.ndarray, sigmas=SIGMAS, with_tv: bool = True) -> list[dict]:
    """Rows ``{sigma, noisy, tv, tv_weight, prior, gain_vs_tv}`` (dB) on clean images x [N, H, W]."""
    rows = []
    for k, s in enumerate(sigmas):
        y = noisy_copy(x, s, seed=100 + k)
        row = {"sigma": s, "noisy": psnr(x, y), "prior": psnr(x, prior_denoise(prior, y, s))}
        if with_tv:
            best = max((psnr(x, tv_denoise(y, f * s)), f * s) for f in TV_FACTORS)
            row.update(tv=best[0], tv_weight=best[1], gain_vs_tv=row["prior"] - best[0])
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = "| sigma | noisy PSNR | TV (best weight) | prior denoiser | prior - TV |\n|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['sigma']:.2f} | {r['noisy']:.2f} | {r.get('tv', float('nan')):.2f} (w={r.get('tv_weight', 0):.3f}) "
        f"| {r['prior']:.2f} | {r.get('gain_vs_tv', float('nan')):+.2f} |\n" for r in rows)


# ---------------------------------------------------------------------------
# unconditional samples (EDM Heun sampler, Karras et al. 2022, Alg. 1)
# ---------------------------------------------------------------------------
@torch.no_grad()
def edm_samples(prior: Prior, n: int, size: int, steps: int = 18, seed: int = 0, rho: float = 7.0) -> torch.Tensor:
    """n unconditional samples [n, size, size] (complex or real) by the deterministic Heun sampler."""
    smin, smax = prior.info.sigma_min, prior.info.sigma_max
    i = torch.arange(steps, dtype=torch.float64)
    t = (smax ** (1 / rho) + i / (steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).float()
    g = torch.Generator().manual_seed(seed)
    like = torch.empty(n, size, size, dtype=torch.complex64 if prior.info.value_kind == "complex" else torch.float32)
    x = standard_noise(like, g) * t[0]
    for k in range(steps):
        d = (x - prior.denoise(x, float(t[k]))) / t[k]
        x_next = x + (t[k + 1] - t[k]) * d
        if t[k + 1] > 0:
            d2 = (x_next - prior.denoise(x_next, float(t[k + 1]))) / t[k + 1]
            x_next = x + (t[k + 1] - t[k]) * (d + d2) / 2
        x = x_next
    return x


def sample_grid(priors: dict[str, Prior], path: Path, n: int = 4, size: int = 128, steps: int = 18) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(priors), n, figsize=(2.5 * n, 2.6 * len(priors)), squeeze=False)
    for r, (name, p) in enumerate(priors.items()):
        xs = edm_samples(p, n, size, steps=steps, seed=r).abs().numpy()
        for c in range(n):
            axes[r, c].imshow(xs[c], cmap="gray", vmin=0, vmax=np.percentile(xs, 99.5))
            axes[r, c].set_axis_off()
        axes[r, 0].set_title(f"{name} (|x|)", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# bundling: export, sha256, registry.json, model card
# ---------------------------------------------------------------------------
def bundle(name: str, run_dir: Path, half: bool = False) -> dict:
    """Export the EMA weights of ``run_dir/checkpoint.pt`` to ``priors/weights/NAME.pt`` and
    record its sha256 in ``registry.json``; returns the registry entry."""
    from priors.training import CHECKPOINT_NAME, export_prior, lineage

    out = WEIGHTS_DIR / f"{name}.pt"
    ck = torch.load(Path(run_dir) / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    source = ck["args"].get("init_from")
    init = None
    if source and source != "None" and not ck.get("init"):  # fine-tuned before checkpoints kept their start
        init = lineage(source, load(source).meta)  # read before `out` (possibly the source) is replaced
    sha = export_prior(Path(run_dir) / CHECKPOINT_NAME, out, name=name, half=half, init=init)
    size_mb = out.stat().st_size / 2**20
    if size_mb > 25:
        raise ValueError(f"{out} is {size_mb:.1f} MB, over the 25 MB limit for bundled weights; use --half")
    obj = torch.load(out, map_location="cpu", weights_only=True)
    reg = read_registry()
    reg[name] = {"file": out.name, "sha256": sha, "value_kind": obj["info"]["value_kind"],
                 "modality": obj["info"]["modality"], "size_mb": round(size_mb, 2),
                 "description": DESCRIPTIONS.get(name, obj["info"]["trained_on"])}
    REGISTRY_FILE.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    return reg[name]


def lineage_lines(meta: dict) -> str:
    """Model-card lines for a fine-tuned prior: each prior it started from, newest first, and the totals."""
    lines, steps, minutes, m = [], meta.get("steps", 0), meta.get("wall_time_s", 0) / 60, meta
    while m.get("init"):
        m = m["init"]
        a = m.get("args", {})
        lines.append(f"\n- **Fine-tuned from**: `{m.get('source')}` (sha256 `{m.get('sha256')}`): {m.get('steps')} steps, "
                     f"lr {a.get('lr')}, batch {a.get('batch')} of {a.get('patch')}x{a.get('patch')} patches, seed "
                     f"{a.get('seed')}, {m.get('wall_time_s', 0) / 60:.1f} min, final loss {m.get('final_loss', float('nan')):.4f}; "
                     f"data: {m.get('data')}.")
        steps, minutes = steps + m.get("steps", 0), minutes + m.get("wall_time_s", 0) / 60
    if lines:
        lines.append(f"\n- **In all**: {steps} steps, {minutes:.1f} min of 1-thread CPU training.")
    return "".join(lines)


def write_card(name: str, prior: Prior, rows: list[dict], heldout: str) -> Path:
    meta, info, entry = prior.meta, prior.info, read_registry()[name]
    a = meta.get("args", {})
    n_params = sum(p.numel() for p in prior.net.parameters())
    text = f"""# {name}

{entry['description']}.

- **Network**: `priors.networks.UNet` under EDM preconditioning (`priors.base.EDMPrior`), width {a.get('width')},
  channel multipliers ({a.get('mults')}), {a.get('res_blocks')} residual block(s) per level, self-attention at the
  coarsest level: {a.get('no_attention') != 'True'}; {n_params / 1e6:.2f} M parameters; {info.value_kind} values
  ({'2 channels: real, imaginary' if info.value_kind == 'complex' else '1 channel'}). Fully convolutional: trained
  on {info.resolution}x{info.resolution} patches, applied to whole images of any size.
- **Training data**: {meta.get('data')}.
- **Splits**: BrainWeb train 04..48 (14 subjects), validation 49, 50, test 51..54; Colin27 train only;
  head CT train slices 0..71, validation 72..83, test 84..107. Only train data were used for training.
- **Normalisation**: `{info.normalization}`{' (99th percentile of |x| = 1 per image)' if info.normalization == 'p99' else
    ' with scale ' + str(info.scale) + ': x = max((HU + 1000) / 1000, 0), see `recon.data.ct_slices.hu_to_prior`'}.
- **Noise range**: sigma in [{info.sigma_min}, {info.sigma_max}], ln sigma ~ N({a.get('p_mean')}, {a.get('p_std')}^2) in
  training, sigma_data = {info.sigma_data}.
- **Training**: denoising score matching with EDM loss weighting, AdamW (lr {a.get('lr')}, weight decay
  {a.get('weight_decay')}, {a.get('warmup')} warm-up steps), gradient clip {a.get('clip')}, EMA {a.get('ema')}, batch
  {a.get('batch')}, flips / 90-degree rotations{' / random smooth phase' if info.value_kind == 'complex' else ''};
  seed {a.get('seed')}; 1 CPU thread (`priors.training`).
- **Steps**: {meta.get('steps')}; **wall time**: {meta.get('wall_time_s', 0) / 60:.1f} min; **final loss** (EDM-weighted,
  mean of the last logged steps): {meta.get('final_loss', float('nan')):.4f}.{lineage_lines(meta)}
- **File**: `{entry['file']}`, {entry['size_mb']} MB, sha256 `{entry['sha256']}` (verified by `priors.load`).

## Held-out denoising

{heldout}. PSNR in dB (peak = max |clean| per image), mean over images; sigma is the noise
std of each real/imaginary part in the prior's scale; TV = `skimage.restoration.denoise_tv_chambolle` with the
best weight per sigma chosen on the same images.

{format_table(rows)}"""
    path = WEIGHTS_DIR / f"{name}.md"
    path.write_text(text)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--half", action="store_true", help="store bundled weights as float16")
    ap.add_argument("--make-heldout", action="store_true")
    ap.add_argument("--brain-slices", type=int, default=1, help="held-out slices per subject and contrast")
    ap.add_argument("--ct-step", type=int, default=2, help="use every N-th head-CT test slice")
    ap.add_argument("--samples", type=int, default=4, help="unconditional samples per prior (0: none)")
    ap.add_argument("--sample-steps", type=int, default=18)
    ap.add_argument("--only", default="", help="comma-separated prior names (default: all bundled)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.make_heldout:
        p = make_heldout_crops()
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KB)")
    for spec in args.bundle:
        name, run = spec.split("=", 1)
        print(f"bundled {name}: {bundle(name, Path(run), half=args.half)}")
    names = [n for n in (args.only.split(",") if args.only else available()) if n]
    if not names:
        return
    t0 = time.time()
    sections, priors = [], {}
    for name in names:
        prior = load(name)
        priors[name] = prior
        if prior.info.modality == "ct":
            x = heldout_ct(args.ct_step)
            desc = f"Head CT test slices {CT_TEST[0]}..{CT_TEST[-1]}, every {args.ct_step}: {len(x)} slices 256x256"
        else:
            x = heldout_brain(args.brain_slices)
            desc = (f"BrainWeb test subjects 51..54 x T1w/T2w/PDw x {args.brain_slices} slice(s), simulated as in "
                    f"training (complex, p99 = 1): {len(x)} slices 217x181")
        ts = time.time()
        rows = denoising_table(prior, x)
        print(f"\n{name}: {desc} ({time.time() - ts:.0f} s)\n{format_table(rows)}")
        if args.bundle:
            print(f"model card: {write_card(name, prior, rows, desc)}")
        sections.append(f"**{name}** ({desc}; {prior.meta.get('steps')} training steps)\n\n{format_table(rows)}")
    png = None
    if args.samples:
        png = sample_grid(priors, ROOT / "benchmarks" / "priors_samples.png", n=args.samples,
                          steps=args.sample_steps)
        print(f"samples: {png}")
    if not args.no_results:
        cmd = "python benchmarks/priors.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = (f"\n## Prior denoising vs TV ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                f"Machine: 2 CPU cores ({args.threads} threads). Command: `{cmd.strip()}`. "
                f"Wall time {time.time() - t0:.0f} s. One-step MMSE denoiser `prior.denoise(y, sigma)` vs "
                f"`denoise_tv_chambolle` with its best weight per sigma (oracle, same images). "
                f"Target: prior >= TV + 1 dB at every sigma.\n\n" + "\n".join(sections)
                + (f"\nUnconditional samples (EDM Heun, {args.sample_steps} steps, 128x128): "
                   f"`benchmarks/{png.name}`.\n" if png else ""))
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
