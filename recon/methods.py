"""Every reconstruction method behind one call: `run_method(name, problem, settings) -> Posterior`.

Posterior samplers come from `solvers`; baselines from `recon.baselines`. Method names are the
command line's (`--solver`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

import solvers
from priors.base import Prior
from recon.problems.ct import CTProblem
from recon.problems.mri import MRIProblem
from solvers.posterior import Posterior

POSTERIOR_METHODS = ("dds", "projection", "score-ald", "dps", "ccdf")
MRI_BASELINES = ("zero-filled", "sense", "l1-wavelet", "tv", "unet")
CT_BASELINES = ("fbp", "sirt", "tv", "unet")
ALL_METHODS = tuple(dict.fromkeys(POSTERIOR_METHODS + MRI_BASELINES + CT_BASELINES))


class MethodError(ValueError):
    """An unknown method, or one that cannot run with what was given."""


@dataclass
class MethodSettings:
    """What methods need besides the problem.

    Attributes:
        prior: the diffusion prior (posterior methods).
        n_samples, nfe, seed: sampler settings (nfe None = each method's default).
        unet: a trained U-Net baseline (``unet`` and ``ccdf --init unet``), or None.
        progress: per-step progress bars.
        hparams: per-method hyper-parameter overrides, e.g. ``{"dds": {"eta": 1.0}}``.
        intervals: the prior's interval calibration table (`recon.intervals.CalibrationTable`), or None.
    """

    prior: Prior | None = None
    n_samples: int = 8
    nfe: int | None = None
    seed: int = 0
    unet: Any = None
    progress: bool = True
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: Any = None


def check_methods(names: list[str], modality: str = "auto") -> list[str]:
    """Validate method names for a modality ("mri", "ct" or "auto" = either); returns them normalised."""
    allowed = POSTERIOR_METHODS + {"mri": MRI_BASELINES, "ct": CT_BASELINES}.get(modality, ALL_METHODS)
    allowed = tuple(dict.fromkeys(allowed))
    out = []
    for n in names:
        key = n.strip().lower().replace("_", "-")
        if key not in allowed:
            raise MethodError(f"unknown solver '{n}' for {modality}; choose from {', '.join(allowed)}")
        out.append(key)
    return out


def run_method(name: str, problem: MRIProblem | CTProblem, settings: MethodSettings) -> Posterior:
    """Run one method. MRI: a `Posterior` over complex images [..., (M,) H, W] (posterior methods) or the
    baseline's estimate (mean only). CT: images in attenuation per pixel (the operator's domain)."""
    if isinstance(problem, CTProblem):
        return run_ct_method(name, problem, settings)
    if name in POSTERIOR_METHODS:
        if settings.prior is None:
            raise MethodError(f"solver '{name}' needs a prior (--prior)")
        hp = dict(settings.hparams.get(name, {}))
        if name == "ccdf" and hp.get("init") == "unet":
            hp["init"] = _unet_init(problem, settings)
        return solvers.sample(name, problem.op, problem.y, settings.prior, n_samples=settings.n_samples,
                              nfe=settings.nfe, seed=settings.seed, progress=settings.progress,
                              sigma_y=problem.noise_std, **hp)
    t0 = time.perf_counter()
    from recon.baselines import mri as base
    if name == "zero-filled":
        post = base.zero_filled(problem.y, problem.op, combine="rss")
    elif name == "sense":
        post = base.cg_sense(problem.y, problem.op, **settings.hparams.get(name, {}))
    elif name == "l1-wavelet":
        post = base.l1_wavelet(problem.y, problem.maps, problem.mask, **settings.hparams.get(name, {}))
    elif name == "tv":
        post = base.total_variation(problem.y, problem.maps, problem.mask, **settings.hparams.get(name, {}))
    elif name == "unet":
        post = _unet_image(problem, settings)
    else:
        raise MethodError(f"solver '{name}' does not apply to MRI data")
    post.wall_time = post.wall_time or time.perf_counter() - t0
    return post


def _unet_image(problem: MRIProblem, settings: MethodSettings) -> Posterior:
    """fastMRI-convention U-Net on the zero-filled RSS image: real magnitude at the recon size [rH, rW]."""
    if settings.unet is None:
        raise MethodError("solver 'unet' needs a U-Net baseline (none is loaded)")
    from recon.baselines import unet as unet_base
    return unet_base.unet_mri(problem.y, settings.unet, crop=problem.crop)


def _unet_init(problem: MRIProblem, settings: MethodSettings) -> torch.Tensor:
    """U-Net magnitude with the phase of a short CG-SENSE solve, as ccdf's initial image [..., (M,) H, W]."""
    if settings.unet is None:
        raise MethodError("ccdf with init='unet' needs a U-Net baseline (none is loaded)")
    if problem.op.n_sets > 1:
        raise MethodError("ccdf with init='unet' supports one ESPIRiT map set")
    from recon.baselines import unet as unet_base
    return unet_base.unet_mri_init(problem.y, problem.op, settings.unet)


def run_ct_method(name: str, problem: CTProblem, settings: MethodSettings) -> Posterior:
    """Run one method on a CT problem; images are attenuation per pixel [H, W]."""
    if name in POSTERIOR_METHODS:
        if settings.prior is None:
            raise MethodError(f"solver '{name}' needs a prior (--prior)")
        hp = dict(settings.hparams.get(name, {}))
        if name == "ccdf" and hp.get("init") in ("unet", "fbp"):
            hp["init"] = _ct_unet(problem, settings).mean if hp["init"] == "unet" else _fbp(problem)
        return solvers.sample(name, problem.data_op, problem.data_y, settings.prior, n_samples=settings.n_samples,
                              nfe=settings.nfe, seed=settings.seed, progress=settings.progress,
                              scale=problem.scale, sigma_y=problem.sigma_y, **hp)
    t0 = time.perf_counter()
    if name == "fbp":
        mean = _fbp(problem)
    elif name == "sirt":
        from recon.baselines.ct import sirt
        mean = sirt(problem.data_y, problem.data_op, **settings.hparams.get(name, {"n_iter": 100, "nonneg": True}))
    elif name == "tv":
        from recon.baselines import ct_iterative
        return ct_iterative.tv_reconstruction(problem.data_y, problem.data_op, **settings.hparams.get(name, {}))
    elif name == "unet":
        return _ct_unet(problem, settings)
    else:
        raise MethodError(f"solver '{name}' does not apply to CT data")
    return Posterior(mean=mean, method=name, wall_time=time.perf_counter() - t0)


def _fbp(problem: CTProblem) -> torch.Tensor:
    from recon.baselines.ct import fbp
    return fbp(problem.y, problem.op)


def _ct_unet(problem: CTProblem, settings: MethodSettings) -> Posterior:
    """Residual U-Net on the FBP, in attenuation per pixel."""
    if settings.unet is None:
        raise MethodError("solver 'unet' needs a U-Net baseline (none is loaded)")
    from recon.baselines import unet as unet_base
    return unet_base.unet_ct(problem.y, problem.op, settings.unet, unit=problem.scale)
