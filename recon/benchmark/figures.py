"""The report's PNG figures; each function returns False (and writes nothing) when it has no data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.benchmark.aggregate import labels_in_order, mean_of, select
from recon.benchmark.runner import BenchmarkResult
from recon.methods import POSTERIOR_METHODS
from recon.problems.ct import metric_image


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_quality(result: BenchmarkResult, modality: str, path: Path) -> bool:
    """Grouped bars: PSNR and SSIM per setting for each method at its default settings (no sweep labels)."""
    recs = [r for r in result.records if r["modality"] == modality and r.get("psnr") is not None]
    if not recs:
        return False
    plt = _plt()
    settings = [s.name for s in (result.preset.mri_settings if modality == "mri" else result.preset.ct_settings)]
    settings = [s for s in settings if select(recs, setting=s)]
    labels = [lab for lab in labels_in_order(result.preset, recs, modality) if "@" not in lab]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(settings) + 2), 7), constrained_layout=True)
    width = 0.8 / max(len(labels), 1)
    for ax, key in zip(axes, ("psnr", "ssim")):
        for j, lab in enumerate(labels):
            vals = [mean_of(r[key] for r in select(recs, setting=s, label=lab)) for s in settings]
            ax.bar(np.arange(len(settings)) + j * width, [v if v is not None else 0 for v in vals], width, label=lab)
        ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings)
        ax.set_ylabel("PSNR (dB)" if key == "psnr" else "SSIM")
        lo = min((r[key] for r in recs), default=0)
        ax.set_ylim(lo - (2 if key == "psnr" else 0.05), None)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(labels), 5), fontsize=8)
    axes[0].set_title(f"{modality.upper()}: quality per setting (mean over cases)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_nfe(result: BenchmarkResult, path: Path) -> bool:
    """PSNR against NFE for each posterior method family, one panel per (modality, setting) with a sweep."""
    recs = [r for r in result.records if r["posterior"] and r.get("psnr") is not None]
    panels = sorted({(r["modality"], r["setting"]) for r in recs
                     if len({x["label"] for x in select(recs, modality=r["modality"], setting=r["setting"])}) > 2})
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    for ax, (mod, setting) in zip(axes[0], panels):
        sub = select(recs, modality=mod, setting=setting)
        case_sets = [{r["case"] for r in select(sub, label=lab)} for lab in {r["label"] for r in sub}]
        common = set.intersection(*case_sets)          # probes run on fewer cases: compare on the shared ones
        sub = [r for r in sub if r["case"] in common]
        for method in POSTERIOR_METHODS:
            pts = sorted({(r["nfe"], r["label"]) for r in sub if r["method"] == method})
            if pts:
                ax.plot([n for n, _ in pts], [mean_of(r["psnr"] for r in select(sub, label=lab)) for _, lab in pts],
                        "o-", label=method)
        for base, style in (("unet", "--"), ("l1-wavelet", ":"), ("tv", "-."), ("sirt", ":")):
            b = mean_of(r["psnr"] for r in result.records if r["modality"] == mod and r["setting"] == setting
                      and r["label"] == base and r["case"] in common and r.get("psnr") is not None)
            if b is not None:
                ax.axhline(b, color="gray", linestyle=style, linewidth=1, label=base)
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{mod.upper()} {setting} ({len(common)} case{'s' if len(common) > 1 else ''})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_cost(result: BenchmarkResult, path: Path) -> bool:
    """Seconds per slice (log scale) and network-time fraction per method label, per modality."""
    mods = [m for m in ("mri", "ct") if select(result.records, modality=m)]
    if not mods:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(mods), 1, figsize=(11, 3.6 * len(mods)), squeeze=False, constrained_layout=True)
    for ax, mod in zip(axes[:, 0], mods):
        recs = [r for r in select(result.records, modality=mod) if r["setting"] != "file"]
        labels = labels_in_order(result.preset, recs, mod)
        secs = [mean_of(r["wall_s"] for r in select(recs, label=lab)) or 0.0 for lab in labels]
        nfes = [max((r["nfe"] for r in select(recs, label=lab)), default=0) for lab in labels]
        bars = ax.bar(labels, secs, color=["tab:blue" if n else "tab:gray" for n in nfes])
        for b, n, lab in zip(bars, nfes, labels):
            rs = select(recs, label=lab)
            w = sum(r["wall_s"] for r in rs)
            frac = sum(r["network_s"] for r in rs) / w if w > 0 and rs[0]["posterior"] else None
            txt = f"{n} NFE" + (f"\n{100 * frac:.0f}% net" if frac is not None else "")
            ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylim(top=max(secs + [1e-3]) * 8)          # room for the annotations
        ax.set_ylabel("seconds per slice")
        ax.set_title(f"{mod.upper()}: time per slice (grey: no network / classical)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_calibration(result: BenchmarkResult, path: Path) -> bool:
    """Left: sparsification error (uncertainty curve minus oracle curve) of each posterior label, mean over
    the MRI random-8x cases (or the first setting with curves); right: mean std against acceleration per posterior
    label (MRI random masks)."""
    if not result.curves:
        return False
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    keys = sorted(result.curves)
    setting = next((k[1] for k in keys if k[:2] == ("mri", "random-8x")), keys[0][1])
    mod = next(k[0] for k in keys if k[1] == setting)
    for (m, s, label), curves in sorted(result.curves.items()):
        if (m, s) != (mod, setting):
            continue
        gap = np.mean([c[0] - c[1] for c in curves], 0)
        a0.plot(np.arange(len(gap)) / len(gap), gap, label=f"{label} (AUSE {np.trapezoid(gap, dx=1 / len(gap)):.3f})"
                if hasattr(np, "trapezoid") else label)
    a0.set_xlabel("fraction of pixels removed (largest std first)")
    a0.set_ylabel("sparsification error (curve - oracle)")
    a0.set_title(f"sparsification error, {mod.upper()} {setting} (0 = perfect ranking)")
    a0.legend(fontsize=7)
    a0.grid(alpha=0.3)
    for label in [r.label for r in result.preset.runs if r.is_posterior]:
        pts = []
        for s in result.preset.mri_settings:
            if s.kind != "random":
                continue
            v = mean_of(r.get("mean_std_rel") for r in select(result.records, label=label, setting=s.name))
            if v is not None:
                pts.append((s.acceleration, 100 * v))
        if len(pts) > 1:
            a1.plot(*zip(*pts), "o-", label=label)
    a1.set_xlabel("acceleration (random 1D mask)")
    a1.set_ylabel("mean std (% of reference max)")
    a1.set_title("MRI: mean posterior std vs acceleration")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_examples(result: BenchmarkResult, modality: str, path: Path) -> bool:
    """One row per setting (first case): reference, zero-filled / FBP, U-Net, dds mean, |dds error|, dds std."""
    rows = [(s, result.examples[(modality, s)]) for s in
            [x.name for x in (result.preset.mri_settings if modality == "mri" else result.preset.ct_settings)]
            if (modality, s) in result.examples]
    if not rows:
        return False
    plt = _plt()
    first = "fbp" if modality == "ct" else "zero-filled"
    cols = ["reference", first, "unet", "dds", "|dds error|", "dds std"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.3 * len(rows)), squeeze=False,
                             constrained_layout=True)
    for i, (setting, ex) in enumerate(rows):
        ref = ex["reference"]
        shown = (lambda x: metric_image(x)) if modality == "ct" else (lambda x: x)
        vmax = float(np.percentile(shown(ref), 99.5))
        err = np.abs(ex["dds"] - ref) if "dds" in ex else None
        std = ex.get("dds_std")
        emax = max(float(np.percentile(err, 99.5)) if err is not None else 0.0,
                   float(np.percentile(std, 99.5)) if std is not None else 0.0, 1e-12)
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == "|dds error|":
                img, kw = err, {"cmap": "magma", "vmin": 0, "vmax": emax}
            elif c == "dds std":
                img, kw = std, {"cmap": "magma", "vmin": 0, "vmax": emax}
            else:
                img = ex.get(c)
                img = None if img is None else shown(img)
                kw = {"cmap": "gray", "vmin": 0, "vmax": vmax}
            if img is not None:
                ax.imshow(img, **kw)
            if i == 0:
                ax.set_title(c, fontsize=9)
            if j == 0:
                ax.set_ylabel(setting, fontsize=9)
    fig.suptitle(f"{modality.upper()} examples (first case per setting); error and std share one colour scale")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
