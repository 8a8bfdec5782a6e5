"""`recon train-unet`: train a U-Net baseline (fastMRI-compatible MRI U-Net, or the CT FBP U-Net)."""
from __future__ import annotations

import argparse

from recon.baselines.unet_training import add_train_unet_arguments, run_train_unet


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_unet_arguments(p)


def run(args: argparse.Namespace) -> int:
    result = run_train_unet(args)
    print(result)
    return 0
