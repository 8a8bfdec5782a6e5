"""`recon priors`: the bundled priors, one line each, with their model cards."""
from __future__ import annotations

import argparse

from priors.registry import WEIGHTS_DIR, describe


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(describe())
    print(f"model cards: {WEIGHTS_DIR}/NAME.md")
    return 0
