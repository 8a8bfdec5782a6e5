"""Classical Cartesian MRI reconstructions: zero-filled, CG-SENSE, L1-wavelet and TV compressed sensing.

Every function is a registered baseline ``fn(A, y, **hp) -> Posterior`` (`recon.baselines.registry`):
``A`` is the acquisition's `MultiCoilMRI` (maps and mask), ``y`` the k-space; the estimate is the
``mean``, ``std=None``.

Conventions: k-space ``complex [..., C, H, W]``, centred (`operators.fft.fft2c`, fastMRI's
convention), zero where not sampled; maps ``complex [C, H, W]`` or, for M map sets (soft SENSE, BART
``ecalib -m M``), ``[M, C, H, W]`` with the coil signal ``sum_m S_m x_m`` and an image ``[..., M, H, W]``
(`recon.problems.mri.MRIProblem.magnitude` combines the sets by root-sum-of-squares); masks ``[W]`` (1D,
phase-encode lines) or ``[H, W]``. Leading dimensions are independent slices.
The regularisation weights ``lam`` are absolute, in the units of the image: the defaults were
chosen on validation data whose images have p99(|x|) = 1 (see ``benchmarks/RESULTS.md``); scale
them with the image intensity.

References:
    Pruessmann KP et al. "SENSE: sensitivity encoding for fast MRI." MRM 1999;42:952-962.
    Pruessmann KP et al. "Advances in sensitivity encoding with arbitrary k-space trajectories." MRM 2001 (CG-SENSE).
    Lustig M, Donoho D, Pauly JM. "Sparse MRI." MRM 2007;58:1182-1195 (L1-wavelet, TV).
    Ong F, Lustig M. "SigPy: a python package for high performance iterative reconstruction." ISMRM 2019.
"""
from __future__ import annotations

import time

import numpy as np
import sigpy as sp
import sigpy.mri.linop as mri_linop
import torch

from operators.base import OperatorShapeError, power_iteration
from operators.fft import ifft2c, rss
from operators.linalg import conjugate_gradient
from operators.mri import MultiCoilMRI
from recon.baselines.registry import register
from solvers.posterior import Posterior

COMBINES = ("rss", "sense")
#: validation-chosen defaults (BrainWeb subjects 49, 50, 4x random 1D, p99-normalised images)
DEFAULT_LAM_CG = 0.001
DEFAULT_LAM_L1 = 0.0003
DEFAULT_LAM_TV = 0.0003
#: on noisy data the weights grow with the k-space noise std (p99-normalised images), as a soft threshold
#: does with the noise (`noise_weight`); chosen on validation data (benchmarks/RESULTS.md, items 4 and 8 of
#: "The fastMRI target, fastMRI's masks, noise-aware calibration and l1-wavelet"; TV: "Classical baselines run to
#: their minimum: TV")
L1_NOISE_FACTOR = 0.08
SENSE_NOISE_FACTOR = 0.4
TV_NOISE_FACTOR = 0.07
#: TV by ADMM (sigpy ``LinearLeastSquares(solver="ADMM")``): penalty rho = TV_RHO_PER_LAM * lam, TV_CG_ITERS
#: warm-started conjugate-gradient steps per x-update. 100 ADMM iterations reach the minimiser to about 1% (relative
#: image change against 300 x 10) for lam >= 0.0003; sigpy's PDHG with `TotalVariationRecon`'s steps was 4.1 dB
#: (PSNR) short of it after 100 iterations and 1.3 dB after 1000 on a validation slice at 4x (benchmarks/RESULTS.md,
#: "Classical baselines run to their minimum: TV")
TV_RHO_PER_LAM = 10.0
TV_CG_ITERS = 5


def noise_weight(lam: float, factor: float, noise_std: float) -> float:
    """A regularisation weight on noisy data: ``max(lam, factor * noise_std)``, ``lam`` the low-noise weight."""
    return max(lam, factor * noise_std)


def _weight_record(lam: float, factor: float, noise_std: float) -> tuple[float, dict]:
    """(`noise_weight`, the hyper-parameter record of that choice: the weight used, the floor, the noise std)."""
    weight = noise_weight(lam, factor, noise_std)
    return weight, {"lam": weight, "lam_floor": lam, "noise_std": noise_std}


@register("zero-filled", modality="mri")
def zero_filled(A: MultiCoilMRI | None, y: torch.Tensor, combine: str = "rss") -> Posterior:
    """Inverse FFT of the zero-filled k-space, coils combined.

    Args:
        A: the acquisition's `MultiCoilMRI` (needed for ``combine="sense"``: ``A^H y``; unused for ``"rss"``).
        y: complex [..., C, H, W] undersampled k-space.
        combine: ``"rss"`` (real magnitude, fastMRI's zero-filled baseline) or ``"sense"``
            (complex ``sum_c conj(S_c) F^-1 y_c``; exact coil combination when ``sum |S_c|^2 = 1``).

    Returns: `Posterior` with ``mean`` real [..., H, W] (rss) or complex [..., H, W] (sense).
    """
    t0 = time.perf_counter()
    if combine not in COMBINES:
        raise ValueError(f"zero_filled: combine must be one of {COMBINES}, got {combine!r}")
    if not y.is_complex() or y.dim() < 3:
        raise OperatorShapeError(f"zero_filled: expected complex k-space [..., C, H, W], got {tuple(y.shape)} {y.dtype}")
    if combine == "rss":
        mean = rss(ifft2c(y))
    else:
        if A is None:
            raise ValueError("zero_filled: combine='sense' needs the operator (its coil maps)")
        A.check_range(y, "k-space")
        mean = A.adjoint(y)
    return Posterior(mean=mean, std=None, wall_time=time.perf_counter() - t0, method=f"zero-filled-{combine}",
                     hparams={"combine": combine})


@register("sense", modality="mri", needs=("noise_std",))
def cg_sense(A: MultiCoilMRI, y: torch.Tensor, lam: float = DEFAULT_LAM_CG, n_iter: int = 20,
             x0: torch.Tensor | None = None, tol: float = 0.0, noise_std: float = 0.0) -> Posterior:
    """CG-SENSE with a Tikhonov weight: solve ``(A^H A + lam I) x = A^H y`` by conjugate gradients.

    Args:
        A: `MultiCoilMRI` with the maps and mask of the acquisition.
        y: complex [..., C, H, W] undersampled k-space.
        lam: Tikhonov weight (>= 0) at low noise; the weight used is ``noise_weight(lam, SENSE_NOISE_FACTOR,
            noise_std)``. ``A^H A`` has eigenvalues in [0, 1] for maps with ``sum |S|^2 = 1``.
        n_iter: CG iterations (one ``A^H A`` each).
        x0: start [..., (M,) H, W]; zeros when None.
        tol: relative residual at which CG stops early.
        noise_std: k-space noise std per real/imaginary part, in the units of ``y`` (0 = noiseless).

    Returns: `Posterior` with complex ``mean`` [..., (M,) H, W]; ``hparams["lam"]`` is the weight used.
    """
    if lam < 0:
        raise ValueError(f"cg_sense: lam must be >= 0, got {lam}")
    A.check_range(y, "k-space")
    t0 = time.perf_counter()
    weight, record = _weight_record(lam, SENSE_NOISE_FACTOR, noise_std)
    normal = A.normal if weight == 0 else (lambda x: A.normal(x) + weight * x)
    x = conjugate_gradient(normal, A.adjoint(y), x0=x0, n_iter=n_iter, tol=tol, dims=len(A.domain_shape))
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="cg-sense",
                     hparams={**record, "n_iter": n_iter})


def _sigpy_inputs(A: MultiCoilMRI, y: torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """k-space complex64 [..., C, H, W], maps complex64 [(M,) C, H, W] and mask float32 [H, W] (or None) as numpy."""
    if not y.is_complex() or y.dim() < 3:
        raise OperatorShapeError(f"{name}: expected complex k-space [..., C, H, W], got {tuple(y.shape)}")
    if tuple(A.maps.shape[-3:]) != tuple(y.shape[-3:]):
        raise OperatorShapeError(f"{name}: maps {tuple(A.maps.shape)} must be [C, H, W] or [M, C, H, W] with "
                                 f"[C, H, W] = {tuple(y.shape[-3:])}")
    k = y.detach().cpu().numpy().astype(np.complex64)
    mps = A.maps.detach().cpu().numpy().astype(np.complex64)
    w = None if A.mask is None else A.mask.detach().cpu().to(torch.float32).numpy()
    return k, mps, w


def _sense_linop(maps: np.ndarray, weights: np.ndarray) -> sp.linop.Linop:
    """sigpy SENSE ``sqrt(w) F S``: one set [C, H, W] (image [H, W]) or M sets [M, C, H, W] (image
    [M, H, W], the coil signal summed over sets)."""
    if maps.ndim == 3:
        return mri_linop.Sense(maps, weights=weights)
    h, w = maps.shape[-2:]
    return sp.linop.Hstack([mri_linop.Sense(m, weights=weights) * sp.linop.Reshape([h, w], [1, h, w])
                            for m in maps], axis=0)


def _max_eig(maps: np.ndarray, weights: np.ndarray | None, kspace: np.ndarray) -> float:
    """Largest eigenvalue of ``A^H A`` by a seeded power iteration (sigpy's own estimate starts from
    the global numpy RNG, which would make results vary from run to run); 1 % safety margin."""
    if weights is None:  # as sigpy: sampled where any coil of the first slice is non-zero
        weights = (np.abs(kspace.reshape(-1, *kspace.shape[-3:])[0]).sum(0) > 0).astype(np.float32)
    A = MultiCoilMRI(torch.from_numpy(maps), torch.from_numpy(weights))
    return 1.01 * power_iteration(A, n_iter=30, generator=torch.Generator().manual_seed(0)) ** 2


def _run_sigpy(regulariser: str, A: MultiCoilMRI, y: torch.Tensor, lam: float, max_iter: int, name: str,
               wave_name: str = "db4") -> torch.Tensor:
    """``min 1/2 ||sqrt(w) (F S x - y)||^2 + lam R(x)`` with sigpy's LinearLeastSquares, as sigpy's
    ``L1WaveletRecon`` (FISTA, R = ||W x||_1) and ``TotalVariationRecon`` (R = ||G x||_1) build it, TV solved by
    ADMM (`TV_RHO_PER_LAM`, `TV_CG_ITERS`) instead of that app's PDHG, which converges far more slowly here; the
    wavelet and finite differences act over the image axes (-2, -1) only, so M map sets are regularised each on
    its own. y: complex [..., C, H, W]; returns complex [..., (M,) H, W]."""
    if lam < 0:
        raise ValueError(f"{name}: lam must be >= 0, got {lam}")
    k, mps, w = _sigpy_inputs(A, y, name)
    eig = max(_max_eig(mps, w, k), 1e-12) if regulariser == "l1-wavelet" else None
    lead = k.shape[:-3]
    flat = k.reshape(-1, *k.shape[-3:])
    out = []
    for b in range(flat.shape[0]):
        wb = w if w is not None else (np.abs(flat[b]).sum(0) > 0).astype(np.float32)  # as sigpy's estimate
        sense = _sense_linop(mps, wb)
        yb = flat[b] * wb**0.5
        if regulariser == "l1-wavelet":  # FISTA step 1 / L
            W = sp.linop.Wavelet(sense.ishape, axes=(-2, -1), wave_name=wave_name)
            proxg = sp.prox.UnitaryTransform(sp.prox.L1Reg(W.oshape, lam), W)
            app = sp.app.LinearLeastSquares(sense, yb, proxg=proxg, alpha=1.0 / eig, max_iter=max_iter,
                                            show_pbar=False)
        else:  # ADMM with z = G x: x-update by CG on A^H A + rho G^H G, z-update soft thresholding
            G = sp.linop.FiniteDifference(sense.ishape, axes=(-2, -1))
            proxg = sp.prox.L1Reg(G.oshape, lam)
            app = sp.app.LinearLeastSquares(sense, yb, proxg=proxg, G=G, solver="ADMM",
                                            rho=max(TV_RHO_PER_LAM * lam, 1e-6), max_cg_iter=TV_CG_ITERS,
                                            max_iter=max_iter, show_pbar=False)
        out.append(app.run())
    return torch.from_numpy(np.asarray(out, dtype=np.complex64).reshape(*lead, *out[0].shape)).to(y.device)


@register("l1-wavelet", modality="mri", needs=("noise_std",))
def l1_wavelet(A: MultiCoilMRI, y: torch.Tensor, lam: float = DEFAULT_LAM_L1, max_iter: int = 100,
               wave_name: str = "db4", noise_std: float = 0.0) -> Posterior:
    """L1-wavelet compressed sensing ``min 1/2 ||M F S x - y||^2 + lam ||W x||_1`` (sigpy ``L1WaveletRecon``, FISTA).

    Args:
        A: `MultiCoilMRI` with maps complex [C, H, W] (or [M, C, H, W] for M map sets) and the sampling
            mask; a mask of None lets sigpy take it from the non-zero k-space samples.
        y: complex [..., C, H, W] undersampled k-space.
        lam: L1 weight at low noise; the weight used is ``noise_weight(lam, L1_NOISE_FACTOR, noise_std)``.
        max_iter: iterations. wave_name: PyWavelets wavelet.
        noise_std: k-space noise std per real/imaginary part, in the units of ``y`` (0 = noiseless).

    Returns: `Posterior` with complex ``mean`` [..., (M,) H, W]; ``hparams["lam"]`` is the weight used.
    """
    t0 = time.perf_counter()
    weight, record = _weight_record(lam, L1_NOISE_FACTOR, noise_std)
    x = _run_sigpy("l1-wavelet", A, y, weight, max_iter, "l1_wavelet", wave_name=wave_name)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="l1-wavelet",
                     hparams={**record, "max_iter": max_iter, "wave_name": wave_name})


@register("tv", modality="mri", needs=("noise_std",))
def total_variation(A: MultiCoilMRI, y: torch.Tensor, lam: float = DEFAULT_LAM_TV, max_iter: int = 100,
                    noise_std: float = 0.0) -> Posterior:
    """Total-variation compressed sensing ``min 1/2 ||M F S x - y||^2 + lam TV(x)`` (sigpy's
    ``LinearLeastSquares`` as ``TotalVariationRecon`` builds it, solved by ADMM: `_run_sigpy`).

    Args and returns as `l1_wavelet`; the weight used is ``noise_weight(lam, TV_NOISE_FACTOR, noise_std)``;
    max_iter: ADMM iterations.
    """
    t0 = time.perf_counter()
    weight, record = _weight_record(lam, TV_NOISE_FACTOR, noise_std)
    x = _run_sigpy("tv", A, y, weight, max_iter, "total_variation")
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="total-variation",
                     hparams={**record, "max_iter": max_iter})
