"""Simulation of measurements: multi-coil Cartesian MRI (and CT / non-Cartesian MRI modules beside it)."""
from .mri import birdcage_maps, simulate_multicoil, smooth_phase

__all__ = ["birdcage_maps", "simulate_multicoil", "smooth_phase"]
