"""Cartesian MRI forward models: ``A = M F S`` (mask, centred FFT, coil maps).

Shapes (leading dimensions are batch dimensions and pass through):
    one map set:   image complex [..., H, W]    -> k-space complex [..., C, H, W]
    M map sets:    image complex [..., M, H, W] -> k-space complex [..., C, H, W]
                   (soft SENSE, as BART ``ecalib -m2``/``pics``: the coil signal sums over sets)
    single coil:   image complex [..., H, W]    -> k-space complex [..., H, W]

FFT: ``fft2c`` (``ifftshift -> fft2(norm="ortho") -> fftshift``), the fastMRI convention.
Masks are real, 1D ``[W]`` (phase-encode lines, broadcast over the readout ``H``) or 2D ``[H, W]``.
"""
from __future__ import annotations

import math

import torch

from .base import LinearOperator, OperatorCapabilityError, OperatorShapeError
from .fft import fft2c, ifft2c, rss


def _as_mask(mask: torch.Tensor | None, hw: tuple[int, int], device, name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=device)
    m = m.real if m.is_complex() else m
    m = m.to(torch.float32)
    if m.dim() == 1:
        if m.shape[0] != hw[1]:
            raise OperatorShapeError(f"{name}: 1D mask of length {m.shape[0]} does not fit {hw[1]} phase-encode lines")
        m = m.expand(*hw)
    elif tuple(m.shape) != tuple(hw):
        raise OperatorShapeError(f"{name}: mask of shape {tuple(m.shape)} does not fit the image {tuple(hw)}")
    return m.contiguous()


def _checkerboard(hw: tuple[int, int], device) -> torch.Tensor:
    """``D[n, m] = (-1)^(n + m)``, float32 [H, W]."""
    n = torch.arange(hw[0], device=device)[:, None] + torch.arange(hw[1], device=device)[None, :]
    return 1.0 - 2.0 * (n % 2).float()


class MultiCoilMRI(LinearOperator):
    """SENSE model ``y_c = M F (S_c x)`` (or ``sum_m S_{m,c} x_m`` for several map sets).

    Args:
        maps: complex ``[C, H, W]`` (one set) or ``[M, C, H, W]`` (M sets).
        mask: real ``[W]`` or ``[H, W]`` sampling mask; None means fully sampled.

    For even H and W the centred FFT is ``fft2c = s D fft2 D`` with the checkerboard ``D = (-1)^(n+m)``
    and ``s = (-1)^((H+W)/2)``; ``D`` is folded into the maps and ``s D`` into the mask once, so
    forward, adjoint and normal run plain FFTs with no shifts. Odd sizes use `fft2c`/`ifft2c`.
    """

    is_complex = True

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None):
        if maps.dim() not in (3, 4) or not maps.is_complex():
            raise OperatorShapeError(f"MultiCoilMRI: maps must be complex [C, H, W] or [M, C, H, W], got {tuple(maps.shape)} {maps.dtype}")
        self.maps = maps
        self.n_sets = 1 if maps.dim() == 3 else maps.shape[0]
        hw = tuple(maps.shape[-2:])
        self.mask = _as_mask(mask, hw, maps.device, "MultiCoilMRI")
        self.domain_shape = hw if maps.dim() == 3 else (self.n_sets, *hw)
        self.range_shape = tuple(maps.shape[-3:])
        self._plain = hw[0] % 2 == 0 and hw[1] % 2 == 0
        if self._plain:
            d = _checkerboard(hw, maps.device)
            sign = -1.0 if ((hw[0] + hw[1]) // 2) % 2 else 1.0
            self._maps_k = maps * d                                   # D S
            self._mask_k = sign * d * (self.mask if self.mask is not None else 1.0)   # s D M
            self._mask2 = None if self.mask is None else self.mask**2
            # a line mask (the same for every readout row) lets the readout FFT cancel in A^H A
            self._line_mask = self.mask is not None and bool((self.mask == self.mask[:1]).all())

    # -- coil expansion and combination (the maps, and the sum over sets) ---------------------
    @staticmethod
    def _expand(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        coils = maps * x.unsqueeze(-3)
        return coils if maps.dim() == 3 else coils.sum(-4)

    @staticmethod
    def _combine(maps: torch.Tensor, coils: torch.Tensor) -> torch.Tensor:
        if maps.dim() == 3:
            return (maps.conj() * coils).sum(-3)
        return (maps.conj() * coils.unsqueeze(-4)).sum(-3)

    # -- A, A^H, A^H A, one leading batch element at a time ---------------------------------------
    # The coil-expanded intermediate of a batch (N samples x C coils x H x W) falls out of the CPU caches:
    # A^H A on 8 samples of 8 coils at 256x256 took 0.35-0.43 s batched and 0.09-0.13 s one sample at a
    # time (2-core CPU). Each element is computed on its own and the results are stacked.
    def _per_item(self, fn, t: torch.Tensor, in_dims: int) -> torch.Tensor:
        lead = t.shape[: t.dim() - in_dims]
        n = math.prod(lead)
        if n <= 1 or t.device.type != "cpu":
            return fn(t)
        flat = t.reshape(n, *t.shape[t.dim() - in_dims:])
        out = torch.stack([fn(flat[i]) for i in range(n)])
        return out.reshape(*lead, *out.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: complex [..., (M,) H, W] -> masked k-space [..., C, H, W]."""
        return self._per_item(self._forward, x, len(self.domain_shape))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """y: k-space [..., C, H, W] -> image [..., (M,) H, W]."""
        return self._per_item(self._adjoint, y, len(self.range_shape))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``, image [..., (M,) H, W] -> image [..., (M,) H, W]."""
        return self._per_item(self._normal, x, len(self.domain_shape))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._plain:
            return torch.fft.fft2(self._expand(self._maps_k, x), norm="ortho") * self._mask_k
        k = fft2c(self._expand(self.maps, x))
        return k if self.mask is None else k * self.mask

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._plain:
            return self._combine(self._maps_k, torch.fft.ifft2(y * self._mask_k, norm="ortho"))
        if self.mask is not None:
            y = y * self.mask
        return self._combine(self.maps, ifft2c(y))

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x = S^H F^H M^2 F S x`` (no shifts: ``D F^H D M^2 D F D = D F^H M^2 F D``; for line masks
        only the phase-encode FFT remains)."""
        if not self._plain:
            return self._adjoint(self._forward(x))
        coils = self._expand(self._maps_k, x)
        if self._mask2 is None:
            return self._combine(self._maps_k, coils)
        if self._line_mask:  # F^H M^2 F = F_pe^H M^2 F_pe when M varies along the phase axis only
            k = torch.fft.fft(coils, dim=-1, norm="ortho") * self._mask2[0]
            return self._combine(self._maps_k, torch.fft.ifft(k, dim=-1, norm="ortho"))
        k = torch.fft.fft2(coils, norm="ortho") * self._mask2
        return self._combine(self._maps_k, torch.fft.ifft2(k, norm="ortho"))

    def to(self, device: torch.device | str) -> "MultiCoilMRI":
        return MultiCoilMRI(self.maps.to(device), None if self.mask is None else self.mask.to(device))

    def per_coil(self) -> "CoilwiseMRI":
        """The coil-wise form ``y_c = M F x_c`` with the same mask (`CoilwiseMRI.from_sense`): complex
        ``[..., C, H, W]`` -> k-space ``[..., C, H, W]``; ``forward(S x)`` equals this operator's ``forward(x)``.

        Raises `OperatorCapabilityError` for several map sets: their coil images are sums over sets, and the
        per-coil samples could not be combined back into the sets.
        """
        if self.n_sets != 1:
            raise OperatorCapabilityError(f"MultiCoilMRI with {self.n_sets} map sets has no per-coil form; "
                                          "it needs one map set")
        return CoilwiseMRI.from_sense(self)


class SingleCoilMRI(LinearOperator):
    """``y = M F x``; for a binary mask ``A A^H = M`` so ``x + A^H(y - A x)`` is the exact projection.

    Args:
        mask: real ``[H, W]``, or ``[W]`` together with ``image_shape``.
        image_shape: ``(H, W)``, needed only for a 1D mask.
    """

    is_complex = True
    #: ``A A^H = M``: exact for a binary mask (a weighted mask is treated as if it were binary)
    exact_projection = True

    def __init__(self, mask: torch.Tensor, image_shape: tuple[int, int] | None = None):
        mask = torch.as_tensor(mask)
        if image_shape is None:
            if mask.dim() != 2:
                raise OperatorShapeError("SingleCoilMRI: a 1D mask needs image_shape=(H, W)")
            image_shape = tuple(mask.shape)
        self.mask = _as_mask(mask, tuple(image_shape), mask.device, "SingleCoilMRI")
        self.domain_shape = self.range_shape = tuple(image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x) * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y * self.mask)

    def to(self, device: torch.device | str) -> "SingleCoilMRI":
        return SingleCoilMRI(self.mask.to(device))


class CoilwiseMRI(LinearOperator):
    """Each coil image on its own: ``y_c = M F x_c``; image ``[..., C, H, W]`` -> k-space ``[..., C, H, W]``.

    The state space of score-MRI's per-coil variant (Chung & Ye 2022): every coil image is reconstructed
    with ``P F`` and the coils are combined by root-sum-of-squares at the end. ``A A^H = M``, so
    ``x + A^H(y - A x)`` is the exact projection.
    """

    is_complex = True
    #: ``A A^H = M``: exact for a binary mask (a weighted mask is treated as if it were binary)
    exact_projection = True

    def __init__(self, mask: torch.Tensor, n_coils: int, image_shape: tuple[int, int]):
        self.mask = _as_mask(mask, tuple(image_shape), torch.as_tensor(mask).device, "CoilwiseMRI")
        self.domain_shape = self.range_shape = (n_coils, *image_shape)

    @classmethod
    def from_sense(cls, op: MultiCoilMRI) -> "CoilwiseMRI":
        """The coil-wise operator with the mask (all ones when None) and coil count of a SENSE operator."""
        mask = op.mask if op.mask is not None else torch.ones(op.range_shape[-2:], device=op.maps.device)
        return cls(mask, op.range_shape[0], tuple(op.range_shape[-2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x) * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y * self.mask)

    def as_image(self, x: torch.Tensor) -> torch.Tensor:
        """Root-sum-of-squares over the coils: complex [..., C, H, W] -> real [..., H, W]."""
        return rss(x, dim=-3)
