"""Posterior-sampling solvers: operator + measurement + prior -> `Posterior`.

    post = solvers.sample("dds", operator, y, prior, n_samples=8, nfe=50, seed=0)
    post.mean, post.std, post.samples, post.nfe, post.wall_time
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from operators.base import LinearOperator
from priors.base import Prior

from .ccdf import CCDF
from .dds import DDS
from .dps import DPS
from .loop import Context, Sampler, SolverError
from .posterior import Posterior
from .projection import Projection
from .score_ald import ScoreALD

METHODS: dict[str, type[Sampler]] = {
    "projection": Projection,
    "score_ald": ScoreALD,
    "dps": DPS,
    "dds": DDS,
    "ccdf": CCDF,
}


def get_method(method: str) -> type[Sampler]:
    """The sampler class for a name (``score-ald`` and ``score_ald`` both work)."""
    key = method.replace("-", "_").lower()
    if key not in METHODS:
        raise SolverError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def hyper_parameters(method: str) -> dict[str, Any]:
    """{name: default} of a method's hyper-parameters (its dataclass fields)."""
    return {f.name: f.default for f in dataclasses.fields(get_method(method))}


def sample(method: str, operator: LinearOperator, y: torch.Tensor, prior: Prior, *, n_samples: int = 8,
           nfe: int | None = None, seed: int = 0, progress: bool = True, callback=None, sigma_y: float = 0.0,
           scale: float | None = None, **hparams: Any) -> Posterior:
    """Run one posterior-sampling method; `hparams` are the method's dataclass fields (see each class), the
    other keywords are `Sampler.run`'s."""
    cls = get_method(method)
    names = hyper_parameters(method)
    unknown = sorted(set(hparams) - set(names))
    if unknown:
        raise SolverError(f"{cls.name}: unknown hyper-parameter(s) {unknown}; valid: {sorted(names)}")
    return cls(**hparams).run(operator, y, prior, n_samples=n_samples, nfe=nfe, seed=seed, progress=progress,
                              callback=callback, sigma_y=sigma_y, scale=scale)


__all__ = ["sample", "get_method", "hyper_parameters", "METHODS", "Posterior", "Sampler", "Context", "SolverError",
           "Projection", "ScoreALD", "DPS", "DDS", "CCDF"]
