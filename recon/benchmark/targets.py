"""The benchmark's targets, evaluated on the records as pass / fail / not-evaluated lines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from recon.benchmark.aggregate import mean_of, paired_gap, select
from recon.benchmark.presets import Preset


def _best_label(records: Sequence[dict[str, Any]], method: str, cond: Callable[[int], bool],
                **where: Any) -> str | None:
    """The label of `method` with the largest measured NFE satisfying `cond` (ties: first seen)."""
    cands = {}
    for r in select(records, method=method, **where):
        if cond(r["nfe"]) and r.get("psnr") is not None:
            cands.setdefault(r["label"], r["nfe"])
    return max(cands, key=lambda k: cands[k]) if cands else None


@dataclass
class Target:
    """One pass/fail line of the report."""

    name: str
    status: str                      # "PASS", "FAIL" or "NOT EVALUATED"
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"- **{self.status}** — {self.name}: {self.detail}"


def evaluate_targets(preset: Preset, records: Sequence[dict[str, Any]]) -> list[Target]:
    """The four targets of the benchmark (see the package docstring) on the measured records."""
    return [_target_speed(preset, records), _target_ood(preset, records), _target_std_order(preset, records),
            _target_spearman(records)]


def _target_speed(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "`dds` at <= 50 NFE within 0.5 dB PSNR of `projection` at >= 1000 NFE (MRI settings)"
    mri = select(records, modality="mri")
    values, fails, missing = {}, [], []
    for s in preset.mri_settings:
        d = _best_label(mri, "dds", lambda n: 0 < n <= 50, setting=s.name)
        p = _best_label(mri, "projection", lambda n: n >= 1000, setting=s.name)
        if d is None or p is None:
            missing.append(s.name)
            continue
        gap, n = paired_gap(mri, d, p, setting=s.name)
        values[s.name] = {"dds": d, "projection": p, "gap_db": gap, "cases": n}
        if gap is not None and gap < -0.5:
            fails.append(f"{s.name} ({gap:+.2f} dB)")
    if not values:
        return _speed_not_evaluated(name, mri)
    text = "; ".join(f"{k}: {v['dds']} - {v['projection']} = {v['gap_db']:+.2f} dB ({v['cases']} cases)"
                     for k, v in values.items())
    if missing:
        text += f"; not measured on {', '.join(missing)}"
    if fails:
        text += f". Missed on {', '.join(fails)}"
    return Target(name, "FAIL" if fails else "PASS", text, values)


def _speed_not_evaluated(name: str, mri: Sequence[dict[str, Any]]) -> Target:
    """Target 1 without a >= 1000-NFE projection run: say so, and compare with the largest budget that ran."""
    most = _best_label(mri, "projection", lambda n: n > 0)
    if most is None:
        return Target(name, "NOT EVALUATED", "projection was not run in this preset")
    setting = next(r["setting"] for r in select(mri, label=most))
    d = _best_label(mri, "dds", lambda n: 0 < n <= 50, setting=setting)
    text = f"no projection run with >= 1000 NFE in this preset (the largest budget was {most})"
    values: dict[str, Any] = {}
    if d is not None:
        gap, n = paired_gap(mri, d, most, setting=setting)
        if gap is not None:
            values = {"dds": d, "projection": most, "setting": setting, "gap_db": gap, "cases": n}
            text += (f"; for information, on {setting} ({n} case{'s' if n > 1 else ''}) {d} - {most} = "
                     f"{gap:+.2f} dB; see the quality-vs-NFE figure")
    return Target(name, "NOT EVALUATED", text, values)


def _target_ood(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "`dds` beats the U-Net by >= 2 dB PSNR on the out-of-distribution masks"
    mri = select(records, modality="mri")
    values, fails = {}, []
    for s in preset.mri_settings:
        gap, n = paired_gap(mri, "dds", "unet", setting=s.name)
        if gap is None:
            continue
        values[s.name] = {"gap_db": gap, "cases": n, "in_distribution": s.in_distribution}
        if not s.in_distribution and gap < 2.0:
            fails.append(s.name)
    ood = {k: v for k, v in values.items() if not v["in_distribution"]}
    if not ood:
        return Target(name, "NOT EVALUATED", "`dds` or `unet` missing on the out-of-distribution settings", values)
    text = "OOD " + ", ".join(f"{k} {v['gap_db']:+.2f} dB" for k, v in ood.items())
    text = f"mean paired PSNR gap dds - unet over {max(v['cases'] for v in values.values())} cases per setting: " + text
    ind = {k: v for k, v in values.items() if v["in_distribution"]}
    if ind:
        text += "; in distribution (reported, no target) " + ", ".join(
            f"{k} {v['gap_db']:+.2f} dB" for k, v in ind.items())
    return Target(name, "FAIL" if fails else "PASS", text, values)


def _target_std_order(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "mean posterior std increases with acceleration (random 4x < random 8x) for every posterior method"
    lo, hi = "random-4x", "random-8x"
    values, fails = {}, []
    for label in [r.label for r in preset.runs if r.is_posterior]:
        a = {r["case"]: r["mean_std_rel"] for r in select(records, label=label, setting=lo) if "mean_std_rel" in r}
        b = {r["case"]: r["mean_std_rel"] for r in select(records, label=label, setting=hi) if "mean_std_rel" in r}
        common = sorted(set(a) & set(b))
        if not common:
            continue
        m4, m8 = mean_of(a[c] for c in common), mean_of(b[c] for c in common)
        values[label] = {"4x": m4, "8x": m8, "cases": len(common)}
        if not (m4 is not None and m8 is not None and m4 < m8):
            fails.append(label)
    if not values:
        return Target(name, "NOT EVALUATED", "no posterior method ran at both random 4x and 8x", values)
    text = ", ".join(f"{k}: {100 * v['4x']:.2f}% -> {100 * v['8x']:.2f}%" for k, v in values.items())
    return Target(name, "FAIL" if fails else "PASS",
                  text + " (mean std over the support, % of the reference maximum)"
                  + (f". Not increasing for {', '.join(fails)}" if fails else ""), values)


def _target_spearman(records: Sequence[dict[str, Any]]) -> Target:
    name = "Spearman(std, |error|) >= 0.4 after 8x8 patch averaging for `dds`"
    rs = [r for r in select(records, label="dds") if r.get("spearman_patch") is not None]
    if not rs:
        return Target(name, "NOT EVALUATED", "no `dds` run with ground truth")
    per = {m: mean_of(r["spearman_patch"] for r in rs if r["modality"] == m) for m in ("mri", "ct")}
    per = {k: v for k, v in per.items() if v is not None}
    overall = mean_of(r["spearman_patch"] for r in rs)
    assert overall is not None
    text = f"mean over {len(rs)} cases {overall:.3f} (" + ", ".join(
        f"{k.upper()} {v:.3f}" for k, v in per.items()) + ")"
    return Target(name, "PASS" if overall >= 0.4 else "FAIL", text, {"overall": overall, **per})
