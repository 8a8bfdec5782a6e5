"""Baselines to compare against: every one returns a result shaped like a `Posterior` (mean only).

Registered baselines take the operator and the measurement, ``fn(A, y, **hp) -> Posterior``, and are
looked up by command-line name and modality (`baseline`). Tensor-level solvers keep the measurement
first, ``f(y, A, ...) -> x``.

Modules:
    registry: `register`, `baseline`, `baseline_names`, `BASELINES`.
    mri: Cartesian MRI: zero-filled, CG-SENSE, L1-wavelet and TV compressed sensing.
    ct_analytic: filtered back-projection (ASTRA).
    ct_iterative: SIRT, CGLS and TV (Chambolle-Pock) for CT.
    unet: trained fastMRI U-Nets for MRI and CT (and their files).
    noncartesian: gridding and CG-SENSE for non-Cartesian MRI (tensor-level, not registered).
"""
from recon.baselines import ct_analytic, ct_iterative, mri, unet  # noqa: F401  (each registers its baselines)
from recon.baselines.registry import BASELINES, MODALITIES, Baseline, baseline, baseline_names, register

__all__ = ["BASELINES", "MODALITIES", "Baseline", "baseline", "baseline_names", "register"]
