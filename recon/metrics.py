"""Image quality metrics with fastMRI's evaluation convention (`fastmri/evaluate.py`).

* inputs are magnitude volumes [slices, H, W] (a single [H, W] image counts as one slice; complex
  inputs are converted to magnitude);
* PSNR and SSIM use ``data_range = max of the target volume``;
* SSIM is computed slice by slice (skimage, 7x7 window) and averaged;
* NMSE = ||gt - pred||^2 / ||gt||^2.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ArrayLike = np.ndarray | torch.Tensor


def _volume(x: ArrayLike) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if np.iscomplexobj(a):
        a = np.abs(a)
    a = a.astype(np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"metrics expect [slices, H, W] or [H, W], got shape {a.shape}")
    return a


def _pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    g, p = _volume(gt), _volume(pred)
    if g.shape != p.shape:
        raise ValueError(f"target shape {g.shape} and prediction shape {p.shape} differ")
    return g, p


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mean squared error ``||gt - pred||^2 / ||gt||^2``."""
    g, p = _pair(gt, pred)
    return float(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)


def psnr(gt: ArrayLike, pred: ArrayLike, data_range: float | None = None) -> float:
    """PSNR in dB with ``data_range = gt.max()`` by default."""
    g, p = _pair(gt, pred)
    return float(peak_signal_noise_ratio(g, p, data_range=g.max() if data_range is None else data_range))


def ssim(gt: ArrayLike, pred: ArrayLike, data_range: float | None = None) -> float:
    """Mean over slices of skimage SSIM (7x7 window) with ``data_range = gt.max()`` (of the volume)."""
    g, p = _pair(gt, pred)
    rng = g.max() if data_range is None else data_range
    return float(np.mean([structural_similarity(g[i], p[i], data_range=rng) for i in range(g.shape[0])]))


def all_metrics(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """{"psnr", "ssim", "nmse"} for one volume."""
    return {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred), "nmse": nmse(gt, pred)}
