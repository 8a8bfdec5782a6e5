"""Baselines to compare against: every one returns a result shaped like a `Posterior` (mean only)."""
