"""The `LinearOperator` abstraction: A, A^H and A^H A on torch tensors.

Every forward model of the project (Cartesian and non-Cartesian MRI, CT) is a
`LinearOperator`. Solvers only ever call `forward`, `adjoint` and `normal`, read
`domain_shape` / `range_shape` / `is_complex` to validate their inputs, and ask the
operator for its capabilities (`exact_projection`, `per_coil`, `as_image`) instead of
checking its class.

Conventions
-----------
* ``domain_shape`` and ``range_shape`` are the *trailing* dimensions of the
  image and of the measurement; any leading dimensions are batch dimensions
  and pass through unchanged.
* Operators are differentiable with respect to their input (plain torch ops,
  or a ``torch.autograd.Function`` where an external library does the work).
"""
from __future__ import annotations

from typing import Sequence

import torch


class OperatorShapeError(ValueError):
    """An input does not have the trailing shape an operator expects."""


class OperatorCapabilityError(ValueError):
    """An operator was asked for a form or property it does not have (e.g. a per-coil form)."""


class LinearOperator:
    """A linear map ``A`` from images ``[..., *domain_shape]`` to measurements ``[..., *range_shape]``.

    Subclasses implement `forward` and `adjoint`; `normal` defaults to
    ``adjoint(forward(x))`` and should be overridden when a faster route exists
    (e.g. Toeplitz embedding for the NUFFT).
    """

    #: trailing shape of an image, e.g. ``(H, W)``
    domain_shape: tuple[int, ...] = ()
    #: trailing shape of a measurement, e.g. ``(C, H, W)``
    range_shape: tuple[int, ...] = ()
    #: True when images and measurements are complex (MRI), False for real (CT)
    is_complex: bool = True
    #: True when ``A A^H`` is a projection on the measurement space (a binary sampling mask), so that
    #: ``x + A^H (y - A x)`` is the exact projection onto {A x = y}; False unless a subclass knows better
    exact_projection: bool = False

    # -- the three maps -------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``, image to image."""
        return self.adjoint(self.forward(x))

    # -- sugar ----------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> "LinearOperator":
        """The adjoint as an operator of its own (``A.H(y) == A.adjoint(y)``)."""
        return _Adjoint(self)

    # -- capabilities: what a generic solver may ask of an operator ----
    def per_coil(self) -> "LinearOperator":
        """The coil-wise form of this operator: every coil image is its own unknown (score-MRI's per-coil
        variant), image ``[..., C, H, W]`` -> measurement ``[..., *range_shape]``; its `as_image` combines the
        coil images.

        Raises `OperatorCapabilityError` (naming the operator) unless a subclass has such a form.
        """
        raise OperatorCapabilityError(f"{type(self).__name__} has no per-coil form (only a Cartesian "
                                      "multi-coil MRI operator with one map set has one)")

    def as_image(self, x: torch.Tensor) -> torch.Tensor:
        """The image a user sees for ``x`` in the operator's domain, ``[..., *domain_shape]``.

        The identity by default (same tensor, same dtype); an operator whose domain is not an image
        (e.g. one image per coil) combines it here.
        """
        return x

    # -- validation, in one place --------------------------------------
    def check_domain(self, x: torch.Tensor, name: str = "image") -> None:
        """Raise `OperatorShapeError` unless ``x`` ends with `domain_shape`."""
        _check_trailing(x, self.domain_shape, type(self).__name__, name)

    def check_range(self, y: torch.Tensor, name: str = "measurement") -> None:
        """Raise `OperatorShapeError` unless ``y`` ends with `range_shape`."""
        _check_trailing(y, self.range_shape, type(self).__name__, name)

    @property
    def dtype(self) -> torch.dtype:
        """Default image dtype: complex64 for complex operators, float32 otherwise."""
        return torch.complex64 if self.is_complex else torch.float32

    def __repr__(self) -> str:
        return f"{type(self).__name__}(domain={self.domain_shape}, range={self.range_shape})"


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op
        self.domain_shape, self.range_shape = op.range_shape, op.domain_shape
        self.is_complex = op.is_complex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:
        return self.op


def _check_trailing(t: torch.Tensor, expected: Sequence[int], op: str, name: str) -> None:
    n = len(expected)
    if n == 0:
        return
    if t.dim() < n or tuple(t.shape[-n:]) != tuple(expected):
        raise OperatorShapeError(
            f"{op}: {name} of shape {tuple(t.shape)} does not end with the expected {tuple(expected)}"
        )


def inner(a: torch.Tensor, b: torch.Tensor, dims: int) -> torch.Tensor:
    """Batched inner product ``<a, b> = sum(conj(a) * b)`` over the last `dims` dimensions.

    Returns a tensor of the leading (batch) shape; complex-correct.
    """
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.flatten(start_dim=prod.dim() - dims).sum(-1) if dims else prod


def adjointness_error(
    op: LinearOperator,
    batch: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> float:
    """Relative dot-product test ``|<Ax, y> - <x, A^H y>| / |<Ax, y>|`` with random x, y.

    The random vectors are drawn on the generator's device (CPU when `generator` is None) and moved to `device`.
    """
    dtype = op.dtype if dtype is None else dtype
    x = torch.randn(*batch, *op.domain_shape, dtype=dtype, generator=generator, device=_draw_device(generator)).to(device)
    y = torch.randn(*batch, *op.range_shape, dtype=dtype, generator=generator, device=_draw_device(generator)).to(device)
    lhs = inner(op.forward(x), y, len(op.range_shape)).sum()
    rhs = inner(x, op.adjoint(y), len(op.domain_shape)).sum()
    return float((lhs - rhs).abs() / lhs.abs().clamp_min(1e-30))


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Where a draw from `generator` must happen: torch refuses a generator on another device."""
    return torch.device("cpu") if generator is None else generator.device


def power_iteration(
    op: LinearOperator,
    n_iter: int = 30,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Estimate the operator norm ``||A||_2`` (sqrt of the largest eigenvalue of ``A^H A``).

    The start vector is drawn on the generator's device (CPU when `generator` is None) and moved to `device`,
    so a CUDA generator works with CUDA data and a CPU generator gives the same start on every device.
    """
    dtype = op.dtype if dtype is None else dtype
    x = torch.randn(*op.domain_shape, dtype=dtype, generator=generator, device=_draw_device(generator)).to(device)
    x = x / torch.linalg.vector_norm(x)
    lam = torch.zeros((), device=device)
    for _ in range(n_iter):
        z = op.normal(x)
        lam = torch.linalg.vector_norm(z)
        x = z / lam.clamp_min(1e-30)
    return float(lam.sqrt())
