"""Undersampling masks: fastMRI 1D (random, equispaced), Gaussian 1D/2D, variable-density Poisson, uniform 2D.

Semantics of `acceleration` and `center_fraction` follow fastMRI's `RandomMaskFunc` and
`EquispacedMaskFractionFunc` (`fastmri/data/subsample.py`): ``round(n * center_fraction)`` centre lines are
always sampled, and the other lines are drawn so that about ``n / acceleration`` lines are sampled in total.
All masks are deterministic for a seed. When `acquired=(left, right)` is given (zero-padded phase edges of
fastMRI files), the mask is zero outside the acquired lines, and `span` says what it was built over:
"fastmri" (default), the whole phase axis as fastMRI's mask functions see it, then zeroed outside the acquired
lines as fastMRI's `apply_mask(..., padding=...)` does, so that a file padded in phase gets fastMRI's own
masks (centre lines ``round(width * center_fraction)``; fewer lines are lost than R implies, and the
achieved acceleration over the acquired lines is below R); or "acquired", the acquired lines only
(centre lines and R counted over them).

1D masks are float32 [W] (phase-encode lines, the last axis); 2D masks are float32 [H, W].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sigpy.mri
import torch

from operators.espirit import acs_region

KINDS_1D = ("random", "equispaced", "gaussian1d")
KINDS_2D = ("gaussian2d", "poisson", "uniform2d")
KINDS = KINDS_1D + KINDS_2D
SPANS = ("fastmri", "acquired")


class MaskError(ValueError):
    """A mask request that cannot be met."""


@dataclass(frozen=True)
class Mask:
    """A sampling mask and how it was made.

    Attributes:
        mask: float32 [W] (1D kinds) or [H, W] (2D kinds), 1 = sampled.
        kind: the mask kind.
        requested: the acceleration asked for.
        acquired: phase range [left, right) the mask was built over.
    """

    mask: torch.Tensor
    kind: str
    requested: float
    acquired: tuple[int, int]

    @property
    def acceleration(self) -> float:
        """Achieved acceleration: acquired samples / sampled samples."""
        left, right = self.acquired
        m = self.mask[..., left:right]
        return float(m.numel() / max(float(m.sum()), 1.0))


def _center_lines(n: int, n_low: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    pad = (n - n_low + 1) // 2
    mask[pad: pad + n_low] = True
    return mask


def random_1d(n: int, acceleration: float, center_fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """fastMRI RandomMaskFunc: centre lines plus each other line with probability (n/R - n_low)/(n - n_low)."""
    rng.randint(1)  # fastMRI draws the (acceleration, centre) choice first; keep the stream identical
    n_low = round(n * center_fraction)
    prob = (n / acceleration - n_low) / (n - n_low)
    return _center_lines(n, n_low) | (rng.uniform(size=n) < prob)


def equispaced_1d(n: int, acceleration: float, center_fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """fastMRI EquispacedMaskFractionFunc: centre lines plus lines at an adjusted spacing from a random offset."""
    rng.randint(1)
    n_low = round(n * center_fraction)
    adjusted = (acceleration * (n_low - n)) / (n_low * acceleration - n)
    offset = rng.randint(0, high=max(round(adjusted), 1))
    lines = np.zeros(n, dtype=bool)
    lines[np.around(np.arange(offset, n - 1, adjusted)).astype(np.uint64)] = True
    return _center_lines(n, n_low) | lines


def gaussian_1d(n: int, acceleration: float, center_fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """Centre lines plus lines drawn without replacement from a Gaussian density (std n/6) around the centre."""
    n_low = round(n * center_fraction)
    mask = _center_lines(n, n_low)
    n_more = max(int(round(n / acceleration)) - int(mask.sum()), 0)
    x = np.arange(n) - n / 2
    p = np.exp(-0.5 * (x / (n / 6)) ** 2) * ~mask
    idx = rng.choice(n, size=min(n_more, int((p > 0).sum())), replace=False, p=p / p.sum())
    mask[idx] = True
    return mask


def _center_box(shape: tuple[int, int], center_fraction: float) -> np.ndarray:
    h, w = shape
    box = np.zeros(shape, dtype=bool)
    ch, cw = max(round(h * center_fraction), 1), max(round(w * center_fraction), 1)
    box[(h - ch + 1) // 2: (h - ch + 1) // 2 + ch, (w - cw + 1) // 2: (w - cw + 1) // 2 + cw] = True
    return box


def gaussian_2d(shape: tuple[int, int], acceleration: float, center_fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """Centre box plus points drawn without replacement from a 2D Gaussian density (std = size/6 per axis)."""
    h, w = shape
    mask = _center_box(shape, center_fraction)
    yy, xx = np.meshgrid(np.arange(h) - h / 2, np.arange(w) - w / 2, indexing="ij")
    p = (np.exp(-0.5 * ((yy / (h / 6)) ** 2 + (xx / (w / 6)) ** 2)) * ~mask).ravel()
    n_more = max(int(round(h * w / acceleration)) - int(mask.sum()), 0)
    idx = rng.choice(h * w, size=min(n_more, int((p > 0).sum())), replace=False, p=p / p.sum())
    mask.ravel()[idx] = True
    return mask


def uniform_2d(shape: tuple[int, int], acceleration: float, center_fraction: float, rng: np.random.RandomState) -> np.ndarray:
    """Centre box plus uniformly random points, so that about 1/R of k-space is sampled."""
    h, w = shape
    mask = _center_box(shape, center_fraction)
    free = np.flatnonzero(~mask.ravel())
    n_more = max(int(round(h * w / acceleration)) - int(mask.sum()), 0)
    mask.ravel()[rng.choice(free, size=min(n_more, free.size), replace=False)] = True
    return mask


def poisson_2d(shape: tuple[int, int], acceleration: float, center_fraction: float, seed: int) -> np.ndarray:
    """Variable-density Poisson-disc sampling (sigpy.mri.poisson) with a fully sampled centre box."""
    h, w = shape
    calib = (max(round(h * center_fraction), 2), max(round(w * center_fraction), 2))
    return np.abs(sigpy.mri.poisson(shape, acceleration, calib=calib, seed=seed, dtype=np.complex64)) > 0


def make_mask(
    kind: str,
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float = 0.08,
    seed: int = 0,
    acquired: tuple[int, int] | None = None,
    span: str = "fastmri",
) -> Mask:
    """Build a mask for k-space of shape ``(H, W) = (readout, phase)``.

    Args:
        kind: one of `KINDS`.
        shape: (readout, phase) size of the k-space.
        acceleration: wanted acceleration R > 1 (over the lines of `span`).
        center_fraction: fraction of lines (1D) or of each side (2D) fully sampled at the centre.
        seed: the random seed (``np.random.RandomState(seed)``, as fastMRI).
        acquired: phase range [left, right) that holds data; the mask is zero outside.
        span: "fastmri" (built over all W lines, then zeroed outside `acquired`) or "acquired" (built
            over the acquired lines only); the same when nothing is padded.
    """
    if kind not in KINDS:
        raise MaskError(f"unknown mask kind '{kind}'; choose one of {', '.join(KINDS)}")
    if not acceleration > 1:
        raise MaskError(f"acceleration must be > 1, got {acceleration}")
    if not 0 <= center_fraction < 1:
        raise MaskError(f"center_fraction must be in [0, 1), got {center_fraction}")
    if span not in SPANS:
        raise MaskError(f"unknown mask span '{span}'; choose one of {', '.join(SPANS)}")
    h, w = shape
    left, right = acquired or (0, w)
    if not 0 <= left < right <= w:
        raise MaskError(f"acquired range [{left}, {right}) does not fit {w} phase-encode lines")
    lo, hi = (left, right) if span == "acquired" else (0, w)   # the lines the mask is built over
    n = hi - lo
    if n / acceleration <= round(n * center_fraction) and kind in ("random", "equispaced"):
        raise MaskError(f"acceleration {acceleration} with centre fraction {center_fraction} is impossible: "
                        f"the centre alone samples {round(n * center_fraction)} of {n} lines")
    rng = np.random.RandomState(seed)
    if kind in KINDS_1D:
        fn = {"random": random_1d, "equispaced": equispaced_1d, "gaussian1d": gaussian_1d}[kind]
        full = np.zeros(w, dtype=bool)
        full[lo:hi] = fn(n, acceleration, center_fraction, rng)
    else:
        sub = (h, n)
        if kind == "poisson":
            part = poisson_2d(sub, acceleration, center_fraction, seed)
        else:
            part = {"gaussian2d": gaussian_2d, "uniform2d": uniform_2d}[kind](sub, acceleration, center_fraction, rng)
        full = np.zeros((h, w), dtype=bool)
        full[:, lo:hi] = part
    full[..., :left] = False
    full[..., right:] = False
    return Mask(torch.from_numpy(full.astype(np.float32)), kind, float(acceleration), (left, right))


def line_pattern_kind(mask: np.ndarray | torch.Tensor) -> str:
    """What kind of sampling a file's own mask [H, W] (or phase lines [W]) is: "equispaced" when the phase lines
    sampled outside the fully sampled centre are evenly spaced (gaps differing by at most one line, as fastMRI's
    equispaced masks with a non-integer spacing), "random" for other line patterns, "2d" when lines are not sampled
    whole. Fewer than three lines outside the centre: "random"."""
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask) > 0
    if m.ndim == 2:
        lines = m.any(0)
        if lines.any() and not m[:, lines].all():
            return "2d"
        m = lines
    width = acs_region(m[None, :])[1]             # the fully sampled centre [a, b), as calibration finds it
    a = (m.shape[0] - width + 1) // 2
    b = a + width
    left, right = np.flatnonzero(m[:a]), np.flatnonzero(m[b:]) + b
    gaps = np.concatenate([np.diff(left), np.diff(right)])
    if left.size + right.size < 3 or gaps.size == 0:
        return "random"
    return "equispaced" if gaps.max() - gaps.min() <= 1 else "random"
