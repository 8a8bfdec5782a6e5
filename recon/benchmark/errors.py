"""The benchmark's own error."""
from __future__ import annotations


class BenchmarkError(ValueError):
    """A benchmark request that cannot run (unknown preset, missing data, bad options)."""
