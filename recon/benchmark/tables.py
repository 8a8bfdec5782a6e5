"""The report's markdown tables: quality, cost, calibration, file agreement and mean std."""
from __future__ import annotations

import math
from typing import Any, Sequence

from recon.benchmark.aggregate import labels_in_order, mean_of, select
from recon.benchmark.runner import BenchmarkResult


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    al = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else "---" for a in al]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def quality_tables(result: BenchmarkResult) -> list[tuple[str, str]]:
    """(title, markdown) per dataset with ground truth: rows = labels, columns = settings, cells PSNR / SSIM."""
    out = []
    recs = [r for r in result.records if r.get("psnr") is not None]
    for dataset in dict.fromkeys(r["dataset"] for r in recs):
        sub = select(recs, dataset=dataset)
        mod = sub[0]["modality"]
        settings = [s.name for s in (result.preset.mri_settings if mod == "mri" else result.preset.ct_settings)
                    if select(sub, setting=s.name)]
        rows = []
        for lab in labels_in_order(result.preset, sub, mod):
            cells = []
            for s in settings:
                rs = select(sub, label=lab, setting=s)
                cells.append(f"{mean_of(r['psnr'] for r in rs):.2f} / {mean_of(r['ssim'] for r in rs):.3f}"
                             + ("" if len(rs) == len({r['case'] for r in select(sub, setting=s)}) else f" ({len(rs)})")
                             if rs else "–")
            rows.append([f"`{lab}`", *cells])
        n = len({r["case"] for r in sub})
        out.append((f"{dataset} ({n} case{'s' if n > 1 else ''}): PSNR dB / SSIM", _table(["method", *settings], rows)))
    return out


def cost_table(result: BenchmarkResult) -> str:
    rows = []
    for mod in ("mri", "ct"):
        recs = [r for r in select(result.records, modality=mod) if r["setting"] != "file"]
        for lab in labels_in_order(result.preset, recs, mod):
            rs = select(recs, label=lab)
            wall = sum(r["wall_s"] for r in rs)
            frac = sum(r["network_s"] for r in rs) / wall if wall > 0 and rs[0]["posterior"] else None
            rows.append([mod.upper(), f"`{lab}`", max(r["nfe"] for r in rs), len(rs), _fmt(wall / len(rs), 2),
                         "–" if frac is None else f"{100 * frac:.0f}%", _fmt(max(r["peak_mib"] for r in rs), 0),
                         _fmt(max(r["extra_mib"] for r in rs), 0)])
    return _table(["modality", "method", "NFE", "slices", "s / slice", "network time", "peak MiB", "+MiB"], rows,
                  "llrrrrrr")


def calibration_table(result: BenchmarkResult) -> str:
    rows = []
    recs = [r for r in result.records if r.get("spearman") is not None]
    for mod in ("mri", "ct"):
        settings = [s.name for s in (result.preset.mri_settings if mod == "mri" else result.preset.ct_settings)]
        for lab in labels_in_order(result.preset, select(recs, modality=mod), mod):
            for s in settings:
                rs = select(recs, modality=mod, label=lab, setting=s)
                if not rs:
                    continue
                unit = 100.0 if mod == "mri" else 1.0
                rows.append([mod.upper(), f"`{lab}`", s, len(rs), _fmt(mean_of(r["spearman"] for r in rs), 3),
                             _fmt(mean_of(r["spearman_patch"] for r in rs), 3),
                             _fmt(mean_of(r["coverage"] for r in rs), 3), _fmt(mean_of(r["ause"] for r in rs), 3),
                             _fmt(unit * (mean_of(r["mean_std_rel"] for r in rs) or float("nan")), 2)])
    return _table(["modality", "method", "setting", "cases", "Spearman px", "Spearman 8x8", "coverage 95%",
                   "AUSE", "mean std"], rows, "lllrrrrrr")


def file_table(result: BenchmarkResult) -> str:
    recs = select(result.records, setting="file")
    rows = []
    for r in recs:
        ag = r.get("agreement_pics")
        agree = [_fmt(ag["psnr"]), _fmt(ag["ssim"], 3), _fmt(ag["nmse"], 4)] if ag else ["–"] * 3
        std = _fmt(100 * r["mean_std_rel"], 2) if r.get("mean_std_rel") is not None else "–"
        rows.append([r["dataset"], f"`{r['label']}`", _fmt(r["acceleration"], 2), *agree, std, _fmt(r["wall_s"], 1)])
    return _table(["file", "method", "R", "PSNR vs pics", "SSIM vs pics", "NMSE vs pics", "mean std (% max)", "s"],
                  rows, "llrrrrrr")


def std_table(result: BenchmarkResult, modality: str) -> str | None:
    """Mean std per setting (rows: posterior labels; columns: settings by increasing acceleration)."""
    settings = (sorted(result.preset.mri_settings, key=lambda s: s.acceleration) if modality == "mri"
                else list(result.preset.ct_settings))
    recs = [r for r in select(result.records, modality=modality, posterior=True) if r.get("mean_std_rel") is not None]
    if not recs:
        return None
    unit = 100.0 if modality == "mri" else 1.0
    rows = []
    for lab in labels_in_order(result.preset, recs, modality):
        cells = [mean_of(r["mean_std_rel"] for r in select(recs, label=lab, setting=s.name)) for s in settings]
        rows.append([f"`{lab}`", *[_fmt(unit * c, 2) if c is not None else "–" for c in cells]])
    return _table(["method", *[f"{s.name} (R {s.acceleration:g})" if modality == "mri" else s.name
                               for s in settings]], rows)
