"""Forward operators on torch tensors: A, A^H and A^H A."""
from .ct import (ASTRAUnavailableError, ConeBeam3D, CUDAUnavailableError, FanBeam2D, ParallelBeam2D, cuda_available,
                 limited_angle, sparse_view_angles)
from .dcf import pipe_menon_dcf
from .noncartesian_maps import grid_calibration, noncartesian_espirit_maps
from .nufft import NonCartesianMRI
from .trajectories import golden_angle_radial, radial, spiral, undersample
from .base import LinearOperator, OperatorCapabilityError, OperatorShapeError, adjointness_error, inner, power_iteration
from .fft import fft2c, ifft2c, rss, sense_combine
from .linalg import conjugate_gradient
from .mri import CoilwiseMRI, MultiCoilMRI, SingleCoilMRI

__all__ = [
    "LinearOperator", "OperatorCapabilityError", "OperatorShapeError", "adjointness_error", "inner", "power_iteration",
    "fft2c", "ifft2c", "rss", "sense_combine", "conjugate_gradient", "MultiCoilMRI", "SingleCoilMRI", "CoilwiseMRI",
    "ParallelBeam2D", "FanBeam2D", "ConeBeam3D", "CUDAUnavailableError", "ASTRAUnavailableError", "cuda_available",
    "sparse_view_angles", "limited_angle", "NonCartesianMRI", "radial", "golden_angle_radial", "spiral", "undersample",
    "pipe_menon_dcf", "grid_calibration", "noncartesian_espirit_maps",
]
