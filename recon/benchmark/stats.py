"""Calibration statistics of a posterior: plain numpy functions of error and std images (no torch).

Images are real arrays in display units, [H, W] or flattened [N]; support masks are bool [H, W].
`CALIBRATION_FUNCS` names the per-pixel statistics of an (error, std) pair; `calibration` computes all of
them for one posterior on one image.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

SUPPORT_FRACTION = 0.05      # calibration statistics use pixels with reference >= 5% of its maximum
PATCH = 8                    # patch size for patch-averaged Spearman
Z95 = 1.96                   # the +/- interval for coverage
SPARSIFICATION_STEPS = 100   # fractions 0, 1/100, ..., 99/100 removed


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long 1D arrays (average ranks for ties); NaN if either is constant."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman: shapes {a.shape} and {b.shape} differ")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def patch_average(x: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Mean over non-overlapping ``patch x patch`` blocks: [H, W] -> [H // patch, W // patch] (edges dropped)."""
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    if h == 0 or w == 0:
        raise ValueError(f"patch_average: image {x.shape} is smaller than one {patch}x{patch} patch")
    return x[..., : h * patch, : w * patch].reshape(*x.shape[:-2], h, patch, w, patch).mean(axis=(-3, -1))


def coverage(error: np.ndarray, std: np.ndarray, z: float = Z95) -> float:
    """Fraction of pixels whose absolute error lies inside ``z * std`` (0.95 for calibrated Gaussian errors, z=1.96)."""
    error, std = np.abs(np.asarray(error, dtype=np.float64)), np.asarray(std, dtype=np.float64)
    return float(np.mean(error <= z * std))


def sparsification_curves(error: np.ndarray, uncertainty: np.ndarray,
                          steps: int = SPARSIFICATION_STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparsification curves (Ilg et al., ECCV 2018): remove the fraction f of pixels with the largest
    uncertainty (resp. the largest error: the oracle) and take the mean absolute error of the rest.

    Returns (fractions float64 [steps], by_uncertainty [steps], oracle [steps]); both curves are divided
    by the mean error of all pixels, so they start at 1.
    """
    e = np.abs(np.asarray(error, dtype=np.float64)).ravel()
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if e.shape != u.shape or e.size == 0:
        raise ValueError(f"sparsification_curves: need equal non-empty inputs, got {e.shape} and {u.shape}")
    fractions = np.arange(steps) / steps
    keep_from = np.minimum(np.rint(fractions * e.size).astype(np.int64), e.size - 1)
    total = max(float(e.mean()), 1e-30)

    def curve(order: np.ndarray) -> np.ndarray:
        tail = np.cumsum(e[order][::-1])[::-1]              # tail[k] = sum of errors after removing k pixels
        return tail[keep_from] / (e.size - keep_from) / total

    return fractions, curve(np.argsort(-u, kind="stable")), curve(np.argsort(-e, kind="stable"))


def ause(error: np.ndarray, uncertainty: np.ndarray, steps: int = SPARSIFICATION_STEPS) -> float:
    """Area between the uncertainty and the oracle sparsification curves (0 for a perfect ranking)."""
    f, by_u, oracle = sparsification_curves(error, uncertainty, steps)
    return float(np.trapezoid(by_u - oracle, f) if hasattr(np, "trapezoid") else np.trapz(by_u - oracle, f))


def support_mask(reference: np.ndarray, fraction: float = SUPPORT_FRACTION) -> np.ndarray:
    """Object support: bool [H, W], pixels where the (non-negative) reference is >= `fraction` of its maximum."""
    return reference >= fraction * float(reference.max())


def calibration(mean: np.ndarray, std: np.ndarray, reference: np.ndarray, support: np.ndarray,
                patch: int = PATCH) -> dict[str, Any]:
    """All calibration statistics of one posterior on one image (display units, real [H, W]).

    Returns spearman (pixels in `support`), spearman_patch (8x8 patch means; patches at least half in
    the support), coverage (+/- 1.96 std), ause, and the sparsification curves (for figures).
    """
    err = np.abs(mean - reference)
    sp = spearman(std[support], err[support])
    inside = patch_average(support.astype(np.float64), patch) >= 0.5
    sp_patch = spearman(patch_average(std, patch)[inside], patch_average(err, patch)[inside])
    f, by_u, oracle = sparsification_curves(err[support], std[support])
    return {"spearman": sp, "spearman_patch": sp_patch, "coverage": coverage(err[support], std[support]),
            "ause": float(np.trapezoid(by_u - oracle, f) if hasattr(np, "trapezoid") else np.trapz(by_u - oracle, f)),
            "curve": (by_u, oracle)}


CALIBRATION_FUNCS: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] = MappingProxyType({
    "spearman": spearman,
    "coverage": coverage,
    "ause": ause,
})
"""Statistics of (absolute error, std) arrays of one shape -> float, by the names `calibration` reports."""
