"""Projection-based predictor-corrector sampling.

Chung & Ye, "Score-based diffusion models for accelerated MRI", MedIA 2022 (score-MRI), and
Song, Shen, Xing & Ermon, "Solving inverse problems in medical imaging with score-based generative
models", ICLR 2022. VE predictor-corrector (Song et al. 2021, Alg. 2/3): a reverse-diffusion predictor
and `corrector_steps` Langevin corrector steps with signal-to-noise ratio `snr`, each followed by a
data-consistency step. Default snr 0.32, chosen on validation data (the best PSNR of the swept values;
score-MRI's fastMRI setting is 0.16; the best value is at the edge of that grid): see
benchmarks/RESULTS.md, Solver defaults.

Data consistency (`dc`: "auto", "exact", "gradient", "cg", "per-coil") and `noised_measurement` are
described in `solvers.predictor_corrector`. In short: the exact projection ``x + A^H (y - A x)`` where the
operator says it is exact (``A.exact_projection``, e.g. single-coil Cartesian MRI), a weighted gradient
step (SENSE) for other complex operators, CG with noised measurements for real-valued ones (CT), and
score-MRI's per-coil variant on the operator's coil-wise form (``A.per_coil()``), returned as that form's
`as_image` (root-sum-of-squares magnitudes).

Noisy data (sigma_y > 0): each move of variance tau is followed by the proximal step of the true likelihood
with ``gamma = tau / sigma_y^2`` instead of the hard step, which would re-inject the measurement noise at every
level; on the noisy Gaussian test (tests/solvers/test_solvers_noise.py) this is closer to the true posterior than the
hard step in both mean and spread: see benchmarks/RESULTS.md, Solver defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from . import predictor_corrector as pc
from .loop import Context
from .schedule import geometric_sigmas, sampler_noise_range, with_final_zero


@dataclass
class Projection(pc.PredictorCorrector):
    """Predictor-corrector sampling with a data-consistency step after every predictor and corrector step.

    Hyper-parameters: snr (Langevin signal-to-noise ratio), corrector_steps, dc (see module docstring),
    lam (DC weight), cg_iters (for dc="cg"), noised_measurement (None = auto), sigma_max/sigma_min
    (None = the prior's range). NFE = n_steps * (1 + corrector_steps) - corrector_steps.
    """

    name: ClassVar[str] = "projection"
    default_nfe: ClassVar[int] = 1000

    sigma_max: float | None = None
    sigma_min: float | None = None

    def sigmas(self, ctx: Context, n_steps: int) -> torch.Tensor:
        hi, lo = sampler_noise_range(self, ctx)
        return with_final_zero(geometric_sigmas(hi, lo, n_steps))
