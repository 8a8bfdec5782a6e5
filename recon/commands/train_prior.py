"""`recon train-prior`: train a score prior (denoising score matching, EDM weighting)."""
from __future__ import annotations

import argparse

from priors.training import add_train_prior_arguments, run_train_prior


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_prior_arguments(p)


def run(args: argparse.Namespace) -> int:
    result = run_train_prior(args)
    print(result)
    return 0
