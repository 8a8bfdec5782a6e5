"""Simulation of measurements: multi-coil Cartesian and non-Cartesian MRI, and CT sinograms."""
from .ct import MU_WATER_PER_MM, ct_sinogram, hu_to_mu, mu_to_hu
from .noncartesian import NonCartesianSimulation, simulate_noncartesian
from .mri import birdcage_maps, simulate_multicoil, smooth_phase

__all__ = ["birdcage_maps", "simulate_multicoil", "smooth_phase", "ct_sinogram", "hu_to_mu", "mu_to_hu",
           "MU_WATER_PER_MM", "simulate_noncartesian", "NonCartesianSimulation"]
