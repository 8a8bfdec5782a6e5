"""How well a prior describes an image: the multiscale score norm.

Mahmood, Lopez & Fleuret, "Multiscale score matching for out-of-distribution detection", ICLR 2021: the norm
of a score network's output at several small noise levels separates images from the training distribution
from others. From a denoiser the score is Tweedie's ``(D(x, sigma) - x) / sigma^2``, so the statistic here is

    score_norm(x) = mean over `sigmas` of  mean over object pixels of  |x - D(x, sigma)|^2 / (2 sigma^2)

(per real/imaginary part; ``sigma^2 |score|^2 / 2``). An image the prior knows is one its denoiser barely
moves at these levels; anatomy, contrast or artefacts it has not seen are pulled towards what it has seen,
and the statistic grows. Applied to posterior *samples* (one value per sample, so the statistic does not
depend on how many samples a run draws), it tells a run whose data the prior does not describe: there the
posterior's spread is not calibrated and its mean may be worse than a classical reconstruction
(benchmarks/RESULTS.md, "Another anatomy"). The levels are in the prior's intensity scale (unit p99).
"""
from __future__ import annotations

from typing import Sequence

import torch

from priors.base import Prior

SIGMAS = (0.02, 0.05)   # small levels: fine structure, where anatomy the prior has not seen shows first
                        # (the default; a method may score its samples at others: recon.methods.typicality_sigmas)
OBJECT_LEVEL = 0.1      # object pixels: |x| at least this fraction of the image's maximum


@torch.no_grad()
def score_norm(prior: Prior, images: torch.Tensor, sigmas: Sequence[float] = SIGMAS) -> torch.Tensor:
    """The multiscale score norm of each image (module docstring).

    Args:
        prior: the prior whose denoiser is asked.
        images: [N, *domain] in the prior's intensity scale (complex for complex priors; MRI domains
            [H, W] or [M, H, W] with M map sets), N images scored separately.
        sigmas: noise levels (prior scale).

    Returns:
        float32 [N] on the images' device (len(sigmas) network evaluations of the N images).
    """
    n = images.shape[0]
    mag = images.abs().reshape(n, -1)
    obj = (mag >= OBJECT_LEVEL * mag.amax(1, keepdim=True)).to(torch.float32)
    total = torch.zeros(n, device=images.device)
    for s in sigmas:
        moved = (prior.denoise(images, float(s)) - images).abs().pow(2).reshape(n, -1) / 2
        total += (moved * obj).sum(1) / obj.sum(1).clamp_min(1.0) / s**2
    return total / len(sigmas)
