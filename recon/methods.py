"""Every reconstruction method behind one call: `run_method(name, problem, settings) -> Posterior`.

Posterior samplers come from `solvers`; baselines from the `recon.baselines` registry (looked up by name
and modality, called as ``fn(A, y, **hp)``). Method names are the command line's (`--solver`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

import solvers
from operators.base import LinearOperator
from priors.base import Prior
from recon.problems.ct import CTProblem
from recon.problems.mri import MRIProblem
from solvers.posterior import Posterior

POSTERIOR_METHODS = ("dds", "projection", "score-ald", "dps", "ccdf")
MRI_BASELINES = ("zero-filled", "sense", "l1-wavelet", "tv", "unet")
CT_BASELINES = ("fbp", "sirt", "tv", "unet")
ALL_METHODS = tuple(dict.fromkeys(POSTERIOR_METHODS + MRI_BASELINES + CT_BASELINES))
#: baselines whose estimate can start ccdf (``--set ccdf.init=NAME``; MRI "unet" is built by `_unet_init`): images
#: in the operator's domain (MRI: complex [(M,) H, W]); CCDF (Chung, Sim & Ye, CVPR 2022) starts from any such estimate
BASELINE_INITS = {"mri": ("tv", "l1-wavelet", "sense"), "ct": ("unet", "fbp", "sirt", "tv")}


def uses_unet(methods: Sequence[str], hparams: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether these methods need the U-Net loaded: as a method, or as a ccdf start (``--set ccdf.init=unet``)."""
    return "unet" in methods or hparams.get("ccdf", {}).get("init") == "unet"


class MethodError(ValueError):
    """An unknown method, or one that cannot run with what was given."""


@dataclass
class MethodConfig:
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


def run_method(name: str, problem: MRIProblem | CTProblem, settings: MethodConfig) -> Posterior:
    """Run one method. MRI: a `Posterior` over complex images [..., (M,) H, W] (posterior methods) or the
    baseline's estimate (mean only). CT: images in attenuation per pixel (the operator's domain)."""
    if name in POSTERIOR_METHODS:
        return _sample(name, problem, settings)
    return run_baseline(name, problem, settings)


def _sample(name: str, problem: MRIProblem | CTProblem, settings: MethodConfig) -> Posterior:
    """A posterior sampler from `solvers`; ccdf's ``init`` naming a baseline (`BASELINE_INITS`, or MRI ``"unet"``)
    becomes that baseline's image, and the record keeps the name."""
    if settings.prior is None:
        raise MethodError(f"solver '{name}' needs a prior (--prior)")
    hp = dict(settings.hparams.get(name, {}))
    common = dict(n_samples=settings.n_samples, nfe=settings.nfe, seed=settings.seed, progress=settings.progress)
    ct = isinstance(problem, CTProblem)
    init = hp.get("init") if name == "ccdf" and isinstance(hp.get("init"), str) else None
    if init == "unet" and not ct:
        hp["init"] = _unet_init(problem, settings)
    elif init in BASELINE_INITS["ct" if ct else "mri"]:
        hp["init"] = run_baseline(init, problem, settings).mean
    if ct:
        post = solvers.sample(name, problem.data_op, problem.data_y, settings.prior, **common,
                              scale=problem.scale, sigma_y=problem.sigma_y, **hp)
    else:
        post = solvers.sample(name, problem.op, problem.y, settings.prior, **common, sigma_y=problem.noise_std, **hp)
    if init is not None:
        post.hparams["init"] = init
    return post


#: noise levels of the typicality statistic per method (`typicality_sigmas`), where the default
#: `priors.typicality.SIGMAS` separates the training anatomy less well. ccdf's samples start from the least-squares
#: image and keep some of its aliasing, which the denoiser removes at 0.05 from brain images as much as from others;
#: at 0.01 alone its validation scores separate brain from chest/abdomen at 4x and 8x, at 0.02 or 0.05 they do not
#: (benchmarks/RESULTS.md, "ccdf's typicality level").
TYPICALITY_SIGMAS: dict[str, tuple[float, ...]] = {"ccdf": (0.01,), "unet": ()}  # the U-Net: no levels (data misfit)


def typicality_sigmas(method: str) -> tuple[float, ...]:
    """The noise levels (prior scale) at which `sample_scores` scores a method's samples."""
    from priors.typicality import SIGMAS
    return TYPICALITY_SIGMAS.get(method.replace("_", "-"), SIGMAS)


def sample_scores(post: Posterior, prior: Prior) -> torch.Tensor:
    """The multiscale score norm (`priors.typicality.score_norm`) of each of the posterior's N samples, [N], taken
    in the prior's intensity scale (the sampler's ``scale``) at the method's levels (`typicality_sigmas`). Costs
    one network evaluation of the N samples per level."""
    from priors.typicality import score_norm
    return score_norm(prior, post.samples / float(post.hparams.get("scale", 1.0)), typicality_sigmas(post.method))


def prior_fit(post: Posterior, settings: MethodConfig) -> float | None:
    """The run's typicality statistic: the method's own where it computes one (``post.fit``: the U-Net's data
    misfit), else how well the prior describes the posterior's samples (the median of `sample_scores`); None for
    a method without samples or prior, or that is not a posterior sampler."""
    if post.fit is not None:
        return post.fit
    if post.samples is None or settings.prior is None or post.method not in POSTERIOR_METHODS:
        return None
    return float(sample_scores(post, settings.prior).median())


def run_baseline(name: str, problem: MRIProblem | CTProblem, settings: MethodConfig) -> Posterior:
    """Run the baseline registered as ``name`` for the problem's modality on its operator and measurement.

    Hyper-parameters are the baseline's registered defaults overridden by ``settings.hparams[name]`` (a keyword
    the baseline does not take raises `MethodError`); the U-Net, the MRI crop and the CT intensity unit come from
    the problem and settings. MRI:
    ``A = problem.op``, ``y`` the k-space [C, H, W]; CT: the raw or Poisson-weighted sinogram [views,
    detectors] with its operator, as the baseline is registered. Returns the baseline's `Posterior` with
    ``wall_time`` set.
    """
    from recon.baselines import baseline

    t0 = time.perf_counter()
    entry = baseline(name, "ct" if isinstance(problem, CTProblem) else "mri")
    A, y = _operands(problem, entry.weighted)
    given = settings.hparams.get(name, {})
    valid = entry.hyper_parameters()
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise MethodError(f"{name} ({entry.modality}) has no hyper-parameter {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(sorted(valid))}")
    hp = {**entry.defaults, **given}
    post = entry(A, y, **hp, **_supplied(name, entry.needs, problem, settings))
    post.wall_time = post.wall_time or time.perf_counter() - t0
    return post


def _operands(problem: MRIProblem | CTProblem, weighted: bool) -> tuple[LinearOperator, torch.Tensor]:
    """``(A, y)``: the problem's operator and measurement; for CT with ``weighted``, the Poisson-weighted pair."""
    if weighted and isinstance(problem, CTProblem):
        return problem.data_op, problem.data_y
    return problem.op, problem.y


def _supplied(name: str, needs: tuple[str, ...], problem: MRIProblem | CTProblem,
              settings: MethodConfig) -> dict[str, Any]:
    """The keywords in ``needs`` taken from the problem and settings: ``net`` (the loaded U-Net), ``crop``
    (the MRI reconstruction size), ``unit`` (CT: attenuation of water per pixel), ``noise_std`` (MRI)."""
    if "net" in needs and settings.unet is None:
        raise MethodError(f"solver '{name}' needs a U-Net baseline (none is loaded)")
    is_ct = isinstance(problem, CTProblem)
    available = {"net": settings.unet, "crop": problem.crop, "unit": problem.scale if is_ct else 1.0,
                 "noise_std": 0.0 if is_ct else problem.noise_std}
    return {key: available[key] for key in needs}


def _unet_init(problem: MRIProblem, settings: MethodConfig) -> torch.Tensor:
    """U-Net magnitude with the phase of a short CG-SENSE solve, as ccdf's initial image [..., (M,) H, W]."""
    if settings.unet is None:
        raise MethodError("ccdf with init='unet' needs a U-Net baseline (none is loaded)")
    if problem.op.n_sets > 1:
        raise MethodError("ccdf with init='unet' supports one ESPIRiT map set")
    from recon.baselines import unet as unet_base
    return unet_base.unet_mri_init(problem.y, problem.op, settings.unet)
