"""Aggregating benchmark records (one dict per method and case): selection, means, paired gaps, summaries."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from recon.benchmark.presets import Preset


def mean_of(values: Iterable[float | None]) -> float | None:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def select(records: Sequence[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """Records whose fields equal every given value (a tuple/list/set value means "one of")."""
    def ok(r: dict[str, Any]) -> bool:
        return all((r.get(k) in v) if isinstance(v, (tuple, list, set)) else r.get(k) == v for k, v in where.items())
    return [r for r in records if ok(r)]


def labels_in_order(preset: Preset, records: Sequence[dict[str, Any]], modality: str) -> list[str]:
    present = {r["label"] for r in records if r["modality"] == modality}
    first = [m for m in ("zero-filled", "fbp", "sense", "sirt", "l1-wavelet", "tv", "unet") if m in present]
    rest = [r.label for r in preset.runs if r.label in present and r.label not in first]
    return first + rest


def paired_gap(records: Sequence[dict[str, Any]], a: str, b: str, key: str = "psnr",
               **where: Any) -> tuple[float | None, int]:
    """Mean of ``a - b`` over cases where both labels have a value (and how many cases)."""
    ra = {r["case"]: r[key] for r in select(records, label=a, **where) if r.get(key) is not None}
    rb = {r["case"]: r[key] for r in select(records, label=b, **where) if r.get(key) is not None}
    common = sorted(set(ra) & set(rb))
    return (mean_of(ra[c] - rb[c] for c in common), len(common)) if common else (None, 0)


def summary_table(records: Sequence[dict[str, Any]], group: Sequence[str], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Means of `keys` over records grouped by the fields in `group` (network fraction = sum/sum)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    out = []
    for k, rs in groups.items():
        row = dict(zip(group, k))
        row["n"] = len(rs)
        for key in keys:
            row[key] = mean_of(r.get(key) for r in rs)
        wall = sum(r["wall_s"] for r in rs)
        row["network_fraction"] = (sum(r["network_s"] for r in rs) / wall) if wall > 0 and rs[0]["posterior"] else None
        row["peak_mib"] = max(r["peak_mib"] for r in rs)
        out.append(row)
    return out
