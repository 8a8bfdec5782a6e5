"""The `recon` command line. Each subcommand lives in its own module with `add_arguments` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, help). Each module registers its own arguments and does its work in `run(args)`.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("recon.commands.info", "describe a fastMRI file: shape, coils, sizes, sampling"),
    "reconstruct": ("recon.commands.reconstruct", "reconstruct fastMRI files: posterior mean, uncertainty, baselines"),
    "evaluate": ("recon.commands.evaluate", "fastMRI metrics of a predictions directory against target files"),
    "demo": ("recon.commands.demo", "reconstruct the bundled sample (the embedded default)"),
    "benchmark": ("recon.commands.benchmark", "solvers vs baselines across masks, accelerations and NFE: REPORT.md"),
    "simulate": ("recon.commands.simulate", "write simulated fastMRI files from BrainWeb (fastMRI-like, the demo sample)"),
    "priors": ("recon.commands.priors", "list the bundled priors and U-Net baselines"),
    "train-prior": ("recon.commands.train_prior", "train a score prior (EDM denoising score matching)"),
    "train-unet": ("recon.commands.train_unet", "train a U-Net baseline (MRI: fastMRI-compatible; CT: FBP input)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="MRI and CT reconstruction with diffusion priors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
