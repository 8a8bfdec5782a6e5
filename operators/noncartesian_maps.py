"""Coil maps for non-Cartesian data: ESPIRiT on a gridded low-resolution centre of k-space.

ESPIRiT (`operators.espirit.espirit_maps`) needs a fully sampled Cartesian calibration
region. Radial and spiral trajectories oversample the centre of k-space, so one is made by
gridding it:

1. keep the samples inside the centred box of ``B = calib_width + 2 * margin`` Cartesian
   steps (``|k_0| < pi * B / H`` and likewise along W);
2. rescale them to radians of a ``B x B`` image (the same Cartesian step ``2 pi / H``),
   weight them by Pipe-Menon density compensation and apply the adjoint NUFFT:
   low-resolution coil images with the full field of view;
3. ``fft2c`` gives Cartesian k-space on the box; its central ``calib_width`` square (the
   margin absorbs the box edges, where the periodic gridding wraps around) is placed in a
   zero ``[C, H, W]`` array and handed to `espirit_maps`, so the maps come out at full size.

Values keep the `NonCartesianMRI` (``fft2c``) scaling, so the gridded centre matches
``fft2c(S_c x)`` on the same box up to gridding error.
"""
from __future__ import annotations

import math

import torch

from .dcf import pipe_menon_dcf
from .espirit import espirit_maps
from .fft import fft2c
from .nufft import NonCartesianMRI
from .trajectories import check_trajectory


def grid_calibration(samples: torch.Tensor, trajectory: torch.Tensor, image_shape: tuple[int, int],
                     calib_width: int = 24, margin: int = 4, dcf_iter: int = 20) -> torch.Tensor:
    """Cartesian k-space whose centre ``calib_width x calib_width`` is gridded from ``samples``.

    Args:
        samples: complex ``[C, K]`` multi-coil samples.
        trajectory: real ``[2, K]`` radians per voxel in ``[-pi, pi)``.
        image_shape: ``(H, W)`` of the full image.
        calib_width: side of the calibration square in Cartesian steps (<= min(H, W)).
        margin: extra Cartesian steps gridded on each side and then dropped (capped so the
            box fits the image); 4 brings the gridding error on the square from ~10% to ~4%
            for radial and spiral trajectories.
        dcf_iter: Pipe-Menon iterations for the box's samples.

    Returns:
        complex ``[C, H, W]``, centred (``fft2c`` convention), zero outside the box.
    """
    check_trajectory(trajectory)
    if samples.dim() != 2 or samples.shape[1] != trajectory.shape[1]:
        raise ValueError(
            f"grid_calibration: samples {tuple(samples.shape)} must be [C, K] with K = {trajectory.shape[1]} "
            "trajectory points"
        )
    h, w = (int(s) for s in image_shape)
    if not 0 < calib_width <= min(h, w):
        raise ValueError(f"grid_calibration: calib_width {calib_width} must lie in (0, {min(h, w)}]")
    box = min(calib_width + 2 * max(margin, 0), h, w)
    scale = torch.tensor([h / box, w / box], dtype=trajectory.dtype, device=trajectory.device)
    small = trajectory * scale[:, None]
    inside = (small.abs() < math.pi).all(0)
    if int(inside.sum()) < box**2:
        raise ValueError(
            f"grid_calibration: only {int(inside.sum())} samples fall in the {box}x{box} calibration "
            "box; it needs at least one per Cartesian cell (use a wider box or more readouts)"
        )
    small = small[:, inside]
    dcf = pipe_menon_dcf(small, (box, box), n_iter=dcf_iter)
    op = NonCartesianMRI(None, small, toeplitz=False, image_shape=(box, box), dtype=samples.dtype)
    gridded = fft2c(op.adjoint(samples[:, inside] * dcf))
    b0 = box // 2 - calib_width // 2
    kspace = torch.zeros(samples.shape[0], h, w, dtype=samples.dtype, device=samples.device)
    r0, c0 = h // 2 - calib_width // 2, w // 2 - calib_width // 2
    kspace[:, r0: r0 + calib_width, c0: c0 + calib_width] = gridded[:, b0: b0 + calib_width, b0: b0 + calib_width]
    return kspace


def noncartesian_espirit_maps(samples: torch.Tensor, trajectory: torch.Tensor, image_shape: tuple[int, int],
                              calib_width: int = 24, kernel_width: int = 6, thresh: float = 0.02,
                              crop: float = 0.95, n_maps: int = 1) -> torch.Tensor:
    """ESPIRiT maps from non-Cartesian samples via `grid_calibration` and `espirit_maps`.

    Args:
        samples: complex ``[C, K]``; trajectory: real ``[2, K]``; image_shape: ``(H, W)``.
        calib_width: side of the gridded calibration box (also ESPIRiT's calibration width).
        kernel_width, thresh, crop, n_maps: as in `operators.espirit.espirit_maps`.

    Returns:
        complex64 ``[C, H, W]`` (``[n_maps, C, H, W]`` for several sets), on the samples' device.
    """
    kspace = grid_calibration(samples, trajectory, image_shape, calib_width)
    return espirit_maps(kspace, calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop,
                        n_maps=n_maps)
