"""`recon train-unet`: train a U-Net baseline (fastMRI-compatible MRI U-Net, or the CT FBP U-Net).

The training itself is `recon.baselines.unet_training` (`run_train_unet` with a
`UNetTrainingConfig`). Also runnable as ``python -m recon.commands.train_unet``.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from recon.baselines import unet_training
from recon.baselines.unet_training import TASKS, UNetTrainingConfig, run_train_unet
from recon.data.brainweb import SHARED_DATA


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``recon train-unet`` (one per `UNetTrainingConfig` field)."""
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, loss.csv)")
    p.add_argument("--cache", type=Path, default=None, help="simulated data (npz); default OUT/data.npz")
    p.add_argument("--data-root", type=Path, default=SHARED_DATA, help="folder with brainweb/ and ct/")
    p.add_argument("--slices", type=int, default=10, help="brain: slices per train subject and contrast")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, default=20_000, help="stop after this many optimiser steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint and validation interval")
    p.add_argument("--chans", type=int, default=None, help="U-Net width (default: 24 brain-mri, 16 head-ct)")
    p.add_argument("--pools", type=int, default=4, help="number of pooling layers")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128, help="head-ct: training patch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=50, help="CSV row every N steps")
    p.add_argument("--export", type=Path, default=None, help="write the single-file weights here at the end")
    p.add_argument("--half", action="store_true", help="export float16 weights")
    p.add_argument("--fastmri-like", type=float, default=0.0,
                   help="brain-mri: fraction of steps on 1 mm fastMRI-like data (16 coils, 2x readout oversampling)")
    p.add_argument("--init", type=Path, default=None, help="start from this U-Net file or bundled name (fine-tune)")
    return p


def config_from_args(args: argparse.Namespace) -> UNetTrainingConfig:
    """The run's settings from the parsed flags (other attributes of ``args`` are ignored)."""
    return UNetTrainingConfig(**{f.name: getattr(args, f.name) for f in fields(UNetTrainingConfig)})


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train with the flags' settings; returns `run_train_unet`'s summary."""
    return run_train_unet(config_from_args(args))


def run(args: argparse.Namespace) -> int:
    print(train(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recon.commands.train_unet``: the same flags as ``recon train-unet``."""
    p = add_arguments(argparse.ArgumentParser(prog="train-unet", description=unet_training.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
