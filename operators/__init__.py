"""Forward operators on torch tensors: A, A^H and A^H A."""
from .base import LinearOperator, OperatorShapeError, adjointness_error, inner, power_iteration
from .fft import fft2c, ifft2c, rss, sense_combine
from .linalg import conjugate_gradient
from .mri import CoilwiseMRI, MultiCoilMRI, SingleCoilMRI

__all__ = [
    "LinearOperator", "OperatorShapeError", "adjointness_error", "inner", "power_iteration",
    "fft2c", "ifft2c", "rss", "sense_combine", "conjugate_gradient", "MultiCoilMRI", "SingleCoilMRI", "CoilwiseMRI",
]
