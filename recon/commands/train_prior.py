"""`recon train-prior`: train a score prior (denoising score matching, EDM weighting).

The training itself is `priors.training` (`run_train_prior` with a `PriorTrainingConfig`); this
command builds the image pool (`recon.data.pools.build_pool`) from ``--data`` and passes it in.

Data sources (``--data``, comma separated):
    brainweb      BrainWeb train subjects, T1w/T2w/PDw, simulated complex (`recon.data.brainweb`)
    colin27       Colin27 axial/coronal/sagittal slices, magnitude (random smooth phase added)
    ct            head-CT train slices 0..71, real, ``(HU + 1000) / 1000`` (`recon.data.ct_slices`)
    fastmri:DIR   every ``*.h5`` under DIR in the fastMRI layout; targets ``reconstruction_rss``
                  (or ``reconstruction_esc``), else the RSS of the k-space; random smooth phase added
    fastmri-espirit:DIR   the same files, ESPIRiT-combined complex images (multi-coil only)

``--init-from PRIOR`` fine-tunes a bundled prior or a prior file (its network flags must match).
Checkpoints every few minutes (``--ckpt-minutes``), ``--resume`` continues OUT/checkpoint.pt with
the same data and noise sequence, ``--max-minutes`` is a wall-clock budget; ``loss.csv`` logs the
loss. Also runnable as ``python -m recon.commands.train_prior``.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import torch

from priors.training import PriorTrainingConfig, run_train_prior
from recon.data.brainweb import SHARED_DATA
from recon.data.pools import ImagePool, build_pool, parse_sources


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``recon train-prior`` (one per `PriorTrainingConfig` field)."""
    p.add_argument("--data", required=True,
                   help="comma-separated: brainweb, colin27, ct, fastmri:DIR, fastmri-espirit:DIR")
    p.add_argument("--data-root", type=Path, default=SHARED_DATA, help="folder with brainweb/, colin27/, ct/")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, loss.csv)")
    p.add_argument("--name", default="custom-prior", help="prior name stored in PriorInfo")
    p.add_argument("--init-from", default=None,
                   help="start from this prior's weights (bundled name or file; same network flags): fine-tuning")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, default=100_000, help="stop after this many optimiser steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint interval (wall clock)")
    p.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0: off)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--slices", type=int, default=16, help="slices per volume / contrast / orientation")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--mults", default="1,2,2,2")
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (with a 1+t/10+t warm-up)")
    p.add_argument("--p-mean", type=float, default=-1.5, help="mean of ln sigma")
    p.add_argument("--p-std", type=float, default=1.5, help="std of ln sigma")
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=20.0)
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=50, help="CSV row every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> PriorTrainingConfig:
    """The run's settings from the parsed flags (other attributes of ``args`` are ignored)."""
    return PriorTrainingConfig(**{f.name: getattr(args, f.name) for f in fields(PriorTrainingConfig)})


def pool_from_config(config: PriorTrainingConfig) -> ImagePool:
    """The training images named by ``--data`` (deterministic given ``--seed``)."""
    return build_pool(parse_sources(config.data), Path(config.data_root), config.seed, config.slices)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Build the config and the pool from the flags and train; returns `run_train_prior`'s summary."""
    config = config_from_args(args)
    if config.threads:  # before the pool: ESPIRiT targets are computed with torch
        torch.set_num_threads(config.threads)
    return run_train_prior(config, pool_from_config(config))


def run(args: argparse.Namespace) -> int:
    print(train(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recon.commands.train_prior``: the same flags as ``recon train-prior``."""
    p = add_arguments(argparse.ArgumentParser(prog="train-prior", description=__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
