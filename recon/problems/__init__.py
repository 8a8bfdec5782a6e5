"""Problems: an MRI or CT reconstruction problem (operator, measurement, scale, noise) built from data."""
