"""2D non-Cartesian k-space trajectories in the torchkbnufft convention.

A trajectory is a real tensor ``[2, K]`` in radians per voxel, every value in
``[-pi, pi)``: row 0 is the frequency along the image's first axis (``H``,
rows), row 1 along the second (``W``, columns). A frequency of ``2 pi m / H``
is the ``m``-th Cartesian line from the centre, so ``[-pi, pi)`` covers the
Cartesian k-space of an ``H x W`` image exactly.

Samples are stored readout by readout: spoke (or interleaf) ``s`` holds samples
``s * n_readout ... (s + 1) * n_readout - 1``. `undersample` keeps whole
readouts of a trajectory or of any tensor whose last axis is the sample axis.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

#: golden angle for full spokes (diameters): pi / golden ratio, about 111.246 degrees
GOLDEN_ANGLE = math.pi * (math.sqrt(5.0) - 1.0) / 2.0


def check_trajectory(trajectory: torch.Tensor, name: str = "trajectory") -> None:
    """Raise `ValueError` unless ``trajectory`` is a real ``[2, K]`` tensor in ``[-pi, pi)``."""
    if trajectory.is_complex() or not trajectory.is_floating_point():
        raise ValueError(f"{name} must be a real floating tensor [2, K] in radians, got {trajectory.dtype}")
    if trajectory.dim() != 2 or trajectory.shape[0] != 2:
        raise ValueError(f"{name} must have shape [2, K] (ky, kx rows), got {tuple(trajectory.shape)}")
    if trajectory.numel() == 0:
        raise ValueError(f"{name} has no samples")
    lo, hi = float(trajectory.min()), float(trajectory.max())
    pi = float(torch.tensor(math.pi, dtype=trajectory.dtype))  # pi rounded as the trajectory stores it
    if not (lo >= -pi and hi < pi):
        raise ValueError(
            f"{name} spans [{lo:.4f}, {hi:.4f}] but must lie in [-pi, pi) radians/voxel; "
            "rescale it (k_rad = 2 pi k_cycles / N for a k in cycles per FOV)"
        )


def _readout(n_readout: int, device: torch.device | str | None) -> torch.Tensor:
    """Radial positions of one centred spoke: ``(i - n/2) * 2 pi / n`` for i < n, in [-pi, pi)."""
    return (torch.arange(n_readout, dtype=torch.float64, device=device) - n_readout / 2) * (2 * math.pi / n_readout)


def _spokes(angles: torch.Tensor, n_readout: int, dtype: torch.dtype) -> torch.Tensor:
    r = _readout(n_readout, angles.device)
    ky = torch.sin(angles)[:, None] * r
    kx = torch.cos(angles)[:, None] * r
    return torch.stack([ky.reshape(-1), kx.reshape(-1)]).to(dtype)


def radial(n_spokes: int, n_readout: int, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform radial trajectory: ``n_spokes`` diameters at angles ``pi s / n_spokes``.

    ``n_readout`` samples per spoke span ``[-pi, pi)``; ``n_readout = 2 N`` is the usual
    2x readout oversampling for an ``N x N`` image, and ``n_spokes = ceil(pi N / 2)``
    (402 for N = 256) satisfies Nyquist at the edge of k-space.

    Returns: real ``[2, n_spokes * n_readout]``.
    """
    angles = torch.arange(n_spokes, dtype=torch.float64, device=device) * (math.pi / n_spokes)
    return _spokes(angles, n_readout, dtype)


def golden_angle_radial(n_spokes: int, n_readout: int, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Golden-angle radial trajectory: spoke ``s`` at angle ``s * GOLDEN_ANGLE mod pi``.

    Any run of consecutive spokes covers k-space nearly uniformly, so keeping the
    first ``n`` (``undersample(traj, n_readout, range(n))``) is a good undersampling.

    Returns: real ``[2, n_spokes * n_readout]``.
    """
    angles = torch.remainder(torch.arange(n_spokes, dtype=torch.float64, device=device) * GOLDEN_ANGLE, math.pi)
    return _spokes(angles, n_readout, dtype)


def spiral(
    n_interleaves: int,
    n_readout: int,
    n_turns: float,
    alpha: float = 2.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Variable-density spiral: ``n_interleaves`` rotated copies of one centre-out arm.

    Arm ``i`` is ``k(t) = k_max t**alpha exp(1j (2 pi n_turns t + 2 pi i / n_interleaves))``
    for ``t = j / n_readout``, ``j < n_readout``, with ``k_max`` just below pi.
    ``alpha = 1`` is the uniform-density (Archimedean) spiral; ``alpha > 1`` packs
    turns closer together near the centre (variable density). The ring spacing at
    the edge is about ``alpha * pi / (n_turns * n_interleaves)``, so an ``N x N``
    image is Nyquist-sampled at the edge when ``n_turns >= alpha * N / (2 n_interleaves)``.
    The time axis is uniform (constant angular rate), not a gradient-limited design.

    Returns: real ``[2, n_interleaves * n_readout]``.
    """
    if alpha <= 0 or n_turns <= 0:
        raise ValueError(f"spiral needs alpha > 0 and n_turns > 0, got alpha={alpha}, n_turns={n_turns}")
    t = torch.arange(n_readout, dtype=torch.float64, device=device) / n_readout
    k_max = math.pi * (1 - 1e-6)
    radius = k_max * t**alpha
    rot = torch.arange(n_interleaves, dtype=torch.float64, device=device) * (2 * math.pi / n_interleaves)
    phi = 2 * math.pi * n_turns * t[None, :] + rot[:, None]
    ky = radius * torch.sin(phi)
    kx = radius * torch.cos(phi)
    return torch.stack([ky.reshape(-1), kx.reshape(-1)]).to(dtype)


def undersample(x: torch.Tensor, n_readout: int, keep: int | Sequence[int]) -> torch.Tensor:
    """Keep a subset of readouts (spokes or interleaves) of ``x``.

    Args:
        x: any tensor whose last axis is the sample axis ``K = n_spokes * n_readout``:
            a trajectory ``[2, K]``, samples ``[..., C, K]`` or density weights ``[K]``.
        n_readout: samples per readout.
        keep: an int ``n`` keeps ``n`` evenly spaced readouts (``floor(i * n_spokes / n)``,
            right for uniform radial or spiral); a sequence keeps those readout indices
            (e.g. ``range(n)`` for the first ``n`` golden-angle spokes).

    Returns: ``x[..., K']`` with ``K' = n_kept * n_readout``, readouts in the order of ``keep``.
    """
    k = x.shape[-1]
    if n_readout <= 0 or k % n_readout:
        raise ValueError(f"undersample: the sample axis ({k}) is not a whole number of readouts of {n_readout}")
    n_spokes = k // n_readout
    if isinstance(keep, int):
        if not 0 < keep <= n_spokes:
            raise ValueError(f"undersample: cannot keep {keep} of {n_spokes} readouts")
        idx = (torch.arange(keep, dtype=torch.float64) * (n_spokes / keep)).floor().long()
    else:
        idx = torch.as_tensor(list(keep), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n_spokes:
            raise ValueError(f"undersample: readout indices must lie in [0, {n_spokes}), got {list(keep)[:8]}...")
    shaped = x.reshape(*x.shape[:-1], n_spokes, n_readout)
    return shaped.index_select(-2, idx.to(x.device)).reshape(*x.shape[:-1], idx.numel() * n_readout)
