"""`recon demo --out DIR`: the embedded default — reconstruct the bundled sample with DDS and compare it with
the U-Net, L1-wavelet compressed sensing and zero-filled baselines."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.commands import reconstruct
from recon.data.demo_sample import SAMPLE

DEMO_SOLVERS = "dds,unet,l1-wavelet,zero-filled"
# The sample has 160 phase lines: fastMRI's 0.08 would leave 12 calibration lines; 0.16 gives 26, which ESPIRiT
# calibrates reliably (about what 0.08 gives on a 320-line fastMRI brain file).
DEMO_CENTER_FRACTION = "0.16"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory (default: demo-out)")
    p.add_argument("--solver", default=DEMO_SOLVERS, help=f"methods to run (default: {DEMO_SOLVERS})")
    p.add_argument("--samples", type=int, default=8,
                   help="posterior samples per slice (default 8, as `recon reconstruct`)")
    p.add_argument("--nfe", type=int, default=50,
                   help="network evaluations per sample (default 50, as `recon reconstruct`; 25 halves the time)")
    p.add_argument("--fast", action="store_true", help="one slice, 2 samples, 5 NFE: a smoke run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    argv = [str(SAMPLE), "--out", str(args.out), "--solver", args.solver, "--accel", "4", "--mask", "random",
            "--center-fraction", DEMO_CENTER_FRACTION,
            "--samples", str(2 if args.fast else args.samples), "--device", args.device, "--overwrite"]
    argv += ["--nfe", "5", "--slices", "1:2"] if args.fast else ["--nfe", str(args.nfe)]
    if args.quiet:
        argv.append("--quiet")
    p = argparse.ArgumentParser()
    reconstruct.add_arguments(p)
    rc = reconstruct.run(p.parse_args(argv))
    if rc == 0:
        name = SAMPLE.stem
        print(f"\ndemo finished: figure {args.out / (name + '.png')}, metrics {args.out / (name + '.json')}, "
              f"volumes {args.out / (name + '.h5')}")
    return rc
