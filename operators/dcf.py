"""Density compensation for non-Cartesian k-space: the iterative method of Pipe and Menon.

Pipe JG, Menon P. "Sampling density compensation in MRI: rationale and an iterative
numerical solution." Magn Reson Med 1999;41:179-186.

With ``C`` the convolution of the samples with the gridding kernel (torchkbnufft's
Kaiser-Bessel interpolation followed by its adjoint), the weights are iterated as
``w <- w / |C w|`` until ``C w`` is flat. The result is scaled so that a fully sampled
Cartesian grid gets ``w = 1``: weights are then "Cartesian samples per sample", and
``A^H (w * A x) ~ x`` for the `NonCartesianMRI` scaling (gridding keeps the image scale).
"""
from __future__ import annotations

import math

import torch
import torchkbnufft as tkbn

from .trajectories import check_trajectory


def _density(
    interp: tkbn.KbInterp, interp_adj: tkbn.KbInterpAdjoint, w: torch.Tensor, traj: torch.Tensor
) -> torch.Tensor:
    """``C w``: spread weights ``[K]`` onto the grid with the kernel and read them back at the samples."""
    grid = interp_adj(w.to(torch.complex64 if w.dtype == torch.float32 else torch.complex128)[None, None], traj)
    return interp(grid, traj)[0, 0].abs()


def pipe_menon_dcf(
    trajectory: torch.Tensor,
    image_shape: tuple[int, int],
    n_iter: int = 20,
    oversamp: float = 2.0,
    numpoints: int = 6,
) -> torch.Tensor:
    """Iterative density compensation weights for a 2D trajectory.

    Args:
        trajectory: real ``[2, K]``, radians per voxel in ``[-pi, pi)``.
        image_shape: ``(H, W)`` of the image the samples encode (sets the kernel width
            in k-space: one Cartesian step is ``2 pi / H``).
        n_iter: Pipe-Menon iterations (10-20 is enough for radial and spiral).
        oversamp, numpoints: gridding kernel, as in `NonCartesianMRI`.

    Returns:
        real ``[K]`` weights on the trajectory's device and dtype, 1 on a fully
        sampled Cartesian grid, growing like ``|k|`` along radial spokes.
    """
    check_trajectory(trajectory)
    h, w = (int(s) for s in image_shape)
    grid = (int(math.ceil(oversamp * h)), int(math.ceil(oversamp * w)))
    opts = dict(im_size=(h, w), grid_size=grid, numpoints=numpoints, dtype=trajectory.dtype, device=trajectory.device)
    interp, interp_adj = tkbn.KbInterp(**opts), tkbn.KbInterpAdjoint(**opts)

    weights = torch.ones(trajectory.shape[1], dtype=trajectory.dtype, device=trajectory.device)
    for _ in range(n_iter):
        weights = weights / _density(interp, interp_adj, weights, trajectory).clamp_min(1e-12)

    # C applied to unit weights on a Cartesian patch, read at its centre: the flat
    # density a fully sampled Cartesian grid has. Scaling by it makes Cartesian w = 1.
    m = torch.arange(-5, 6, dtype=trajectory.dtype, device=trajectory.device)
    ky, kx = torch.meshgrid(m * (2 * math.pi / h), m * (2 * math.pi / w), indexing="ij")
    patch = torch.stack([ky.reshape(-1), kx.reshape(-1)])
    cartesian = _density(interp, interp_adj, torch.ones(patch.shape[1], dtype=patch.dtype, device=patch.device), patch)
    return weights * cartesian[patch.shape[1] // 2]
