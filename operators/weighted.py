"""A measurement-side diagonal weighting ``W^{1/2} A``: whitening for data whose noise variance varies per bin.

For ``y = A x + n`` with independent noise of variance ``v_i = s^2 / w_i`` in bin i, the whitened problem
``(W^{1/2} A) x = W^{1/2} y`` has noise of the same variance ``s^2`` in every bin, and its least-squares
solution is the weighted one, ``argmin_x (A x - y)^T W (A x - y)``. Every solver and baseline that works
with an operator and white noise therefore handles the weighted problem unchanged.
"""
from __future__ import annotations

import torch

from .base import LinearOperator, OperatorShapeError


class WeightedOperator(LinearOperator):
    """``B = diag(sqrt_w) A``: image ``[..., *domain]`` -> weighted measurement ``[..., *range]``.

    Args:
        op: the unweighted operator ``A``.
        sqrt_weights: real, non-negative ``[*range_shape]`` (``W^{1/2}``), on the device the operator is used on;
            its dtype is cast to the measurement's real dtype at each call.

    ``adjoint(y) = A^H (sqrt_w * y)``, so ``B^H B = A^H W A``. `whiten` maps a raw measurement to ``W^{1/2} y``
    and `unwhiten` back.
    """

    def __init__(self, op: LinearOperator, sqrt_weights: torch.Tensor):
        if sqrt_weights.is_complex() or tuple(sqrt_weights.shape) != tuple(op.range_shape):
            raise OperatorShapeError(f"WeightedOperator: sqrt_weights must be real {tuple(op.range_shape)} "
                                     f"(the measurement shape of {type(op).__name__}), got "
                                     f"{tuple(sqrt_weights.shape)} {sqrt_weights.dtype}")
        if not bool(torch.isfinite(sqrt_weights).all()) or bool((sqrt_weights < 0).any()):
            raise ValueError("WeightedOperator: sqrt_weights must be finite and non-negative")
        self.op = op
        self.sqrt_weights = sqrt_weights
        self.domain_shape, self.range_shape = op.domain_shape, op.range_shape
        self.is_complex = op.is_complex

    def _w(self, t: torch.Tensor) -> torch.Tensor:
        real = t.real.dtype if t.is_complex() else t.dtype
        return self.sqrt_weights.to(device=t.device, dtype=real)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``sqrt_w * A x``."""
        y = self.op.forward(x)
        return self._w(y) * y

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H (sqrt_w * y)``."""
        self.check_range(y)
        return self.op.adjoint(self._w(y) * y)

    def whiten(self, y: torch.Tensor) -> torch.Tensor:
        """Raw measurement -> ``W^{1/2} y`` (same shape)."""
        self.check_range(y)
        return self._w(y) * y

    def unwhiten(self, y: torch.Tensor) -> torch.Tensor:
        """``W^{1/2} y`` -> raw measurement (zero where the weight is zero)."""
        self.check_range(y)
        w = self._w(y)
        return torch.where(w > 0, y / w.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(y))

    def __repr__(self) -> str:
        return f"WeightedOperator({self.op!r})"
