"""Non-Cartesian MRI forward model ``A = F_nu S`` on torchkbnufft.

Shapes (leading dimensions are batch dimensions and pass through):
    multi-coil:  image complex [..., H, W] -> samples complex [..., C, K]
    single coil: image complex [..., H, W] -> samples complex [..., K]

Trajectory: real ``[2, K]`` in radians per voxel, in ``[-pi, pi)`` (row 0 along H,
row 1 along W; see `operators.trajectories`). Scaling follows `fft2c`:
``y_k = sum_n x_n exp(-1j k . (n - N // 2)) / sqrt(H W)``, so a trajectory on the
Cartesian grid ``2 pi m / N`` reproduces ``fft2c`` up to the NUFFT's interpolation
error (about 1e-3 relative with the default 6-point Kaiser-Bessel kernel on a 2x grid).

``normal`` uses torchkbnufft's Toeplitz embedding when ``toeplitz=True``:
``A^H A x = sum_c conj(S_c) crop(iFFT(T * FFT(pad(S_c x))))`` on a ``2H x 2W`` grid, with no
interpolation at all. ``T`` is `torchkbnufft.calc_toeplitz_kernel`; the filter is applied
with ``torch.fft.fft2(..., s=(2H, 2W))``, which skips the FFTs of the all-zero padded rows
(about 30% faster than `torchkbnufft.functional.fft_filter` on CPU). This is what CG calls
repeatedly, so it is the fast path.
"""
from __future__ import annotations

import copy
import math

import torch
import torchkbnufft as tkbn

from .base import LinearOperator, OperatorShapeError
from .trajectories import check_trajectory


class NonCartesianMRI(LinearOperator):
    """SENSE model on a non-Cartesian trajectory: ``y_c = F_nu (S_c x)``.

    Args:
        maps: complex ``[C, H, W]`` coil sensitivities, or None for a single coil
            (then ``image_shape`` is required).
        trajectory: real ``[2, K]``, radians per voxel in ``[-pi, pi)``.
        toeplitz: compute the Toeplitz kernel so that `normal` is two FFTs per coil.
        image_shape: ``(H, W)``; only needed (and checked against ``maps``) when given.
        oversamp: NUFFT grid oversampling (grid = ``oversamp * (H, W)``).
        numpoints: Kaiser-Bessel interpolation neighbours per dimension.
        dtype: complex64 or complex128; images and samples must have this dtype
            (real inputs are promoted to it).
    """

    is_complex = True

    def __init__(
        self,
        maps: torch.Tensor | None,
        trajectory: torch.Tensor,
        toeplitz: bool = True,
        image_shape: tuple[int, int] | None = None,
        oversamp: float = 2.0,
        numpoints: int = 6,
        dtype: torch.dtype = torch.complex64,
    ):
        if dtype not in (torch.complex64, torch.complex128):
            raise TypeError(f"NonCartesianMRI: dtype must be complex64 or complex128, got {dtype}")
        check_trajectory(trajectory)
        if maps is not None:
            if maps.dim() != 3 or not maps.is_complex():
                raise OperatorShapeError(
                    f"NonCartesianMRI: maps must be complex [C, H, W], got {tuple(maps.shape)} {maps.dtype}")
            if image_shape is not None and tuple(image_shape) != tuple(maps.shape[-2:]):
                raise OperatorShapeError(
                    f"NonCartesianMRI: maps {tuple(maps.shape)} do not fit image_shape {tuple(image_shape)}")
            image_shape = tuple(maps.shape[-2:])
            maps = maps.to(dtype)
        elif image_shape is None:
            raise OperatorShapeError("NonCartesianMRI: a single-coil operator (maps=None) needs image_shape=(H, W)")
        h, w = (int(s) for s in image_shape)
        real = torch.float32 if dtype == torch.complex64 else torch.float64
        device = trajectory.device if maps is None else maps.device

        self.maps = maps
        self.trajectory = trajectory.to(device=device, dtype=real)
        self.domain_shape = (h, w)
        self.range_shape = (trajectory.shape[1],) if maps is None else (maps.shape[0], trajectory.shape[1])
        self._dtype = dtype
        self.scale = 1.0 / math.sqrt(h * w)
        grid = (int(math.ceil(oversamp * h)), int(math.ceil(oversamp * w)))
        opts = dict(im_size=(h, w), grid_size=grid, numpoints=numpoints, dtype=real, device=device)
        self._nufft = tkbn.KbNufft(**opts)
        self._nufft_adj = tkbn.KbNufftAdjoint(**opts)
        self.kernel = None
        if toeplitz:
            kernel = tkbn.calc_toeplitz_kernel(self.trajectory, (h, w), grid_size=grid, numpoints=numpoints)
            self.kernel = kernel * self.scale**2  # torchkbnufft's kernel is for the unscaled NUFFT

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def n_coils(self) -> int:
        """Number of coils (1 for a single-coil operator)."""
        return 1 if self.maps is None else self.maps.shape[0]

    def _as_dtype(self, t: torch.Tensor, name: str) -> torch.Tensor:
        if not t.is_complex():
            return t.to(self._dtype)
        if t.dtype != self._dtype:
            raise TypeError(
                f"NonCartesianMRI: {name} is {t.dtype} but the operator is {self._dtype}; build it with dtype={t.dtype}")
        return t

    def _smaps(self) -> torch.Tensor | None:
        return None if self.maps is None else self.maps.unsqueeze(0)

    # -- forward and adjoint, side by side --------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: complex [..., H, W] -> samples complex [..., C, K] (or [..., K] single coil)."""
        self.check_domain(x)
        x = self._as_dtype(x, "image")
        lead = x.shape[:-2]
        y = self._nufft(x.reshape(-1, 1, *self.domain_shape), self.trajectory, smaps=self._smaps())
        return (y * self.scale).reshape(*lead, *self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """y: samples complex [..., C, K] (or [..., K]) -> image complex [..., H, W] (coil-combined)."""
        self.check_range(y, "samples")
        y = self._as_dtype(y, "samples")
        lead = y.shape[: y.dim() - len(self.range_shape)]
        x = self._nufft_adj(y.reshape(-1, self.n_coils, y.shape[-1]), self.trajectory, smaps=self._smaps())
        return (x * self.scale).reshape(*lead, *self.domain_shape)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``: Toeplitz FFT filter when a kernel was computed, else adjoint(forward(x))."""
        if self.kernel is None:
            return self.adjoint(self.forward(x))
        self.check_domain(x)
        x = self._as_dtype(x, "image")
        lead, (h, w) = x.shape[:-2], self.domain_shape
        x = x.reshape(-1, 1, h, w)
        coils = x if self.maps is None else x * self.maps
        spectrum = torch.fft.fft2(coils, s=self.kernel.shape) * self.kernel  # zero-padded to [2H, 2W]
        filtered = torch.fft.ifft2(spectrum, norm="forward")[..., :h, :w]    # the kernel holds the 1/(4HW)
        out = filtered if self.maps is None else (filtered * self.maps.conj()).sum(1, keepdim=True)
        return out.reshape(*lead, h, w)

    def to(self, device: torch.device | str) -> "NonCartesianMRI":
        """A copy with maps, trajectory, NUFFT tables and Toeplitz kernel on ``device``."""
        op = copy.copy(self)
        op.maps = None if self.maps is None else self.maps.to(device)
        op.trajectory = self.trajectory.to(device)
        op.kernel = None if self.kernel is None else self.kernel.to(device)
        op._nufft = copy.deepcopy(self._nufft).to(device)
        op._nufft_adj = copy.deepcopy(self._nufft_adj).to(device)
        return op

    def __repr__(self) -> str:
        return f"NonCartesianMRI(domain={self.domain_shape}, range={self.range_shape}, toeplitz={self.kernel is not None})"
