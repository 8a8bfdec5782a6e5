"""Data: fastMRI files, BrainWeb and head-CT volumes, masks, simulation, the bundled sample."""
