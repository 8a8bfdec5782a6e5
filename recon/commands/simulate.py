"""`recon simulate`: write simulated fastMRI files from BrainWeb anatomy (needs ../shared/data).

    recon simulate fastmri-like --out DATA_DIR --subjects 51 52 53 54     # test files
    recon simulate fastmri-like --out DATA_DIR --subjects 49 50           # validation files
    recon simulate fastmri-like --out DATA_DIR --subjects 49 50 --pixel-mm 0.7   # fastMRI's brain resolution
    recon simulate demo-sample                                           # regenerate the bundled sample
"""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_volume


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("fastmri-like", "demo-sample"),
                   help="fastmri-like: 16 coils, 2x readout oversampling, correlated noise (one file per subject); "
                        "demo-sample: the bundled sample (BrainWeb test subject 51, 8 coils)")
    p.add_argument("--out", type=Path, default=None, help="output folder (fastmri-like; required)")
    p.add_argument("--subjects", type=int, nargs="+", default=None, help="BrainWeb subjects (fastmri-like; required)")
    p.add_argument("--contrast", default="T1w")
    p.add_argument("--slices", type=int, default=FastMRILikeSpec.n_slices)
    p.add_argument("--coils", type=int, default=FastMRILikeSpec.n_coils)
    p.add_argument("--noise-rel", type=float, default=FastMRILikeSpec.noise_rel)
    p.add_argument("--pixel-mm", type=float, default=FastMRILikeSpec.pixel_mm,
                   help="in-plane pixel size in mm (default 1; 0.7 is fastMRI's 320 x 320 brain resolution)")


def run(args: argparse.Namespace) -> int:
    if args.kind == "demo-sample":
        from recon.data.demo_sample import make_demo_sample

        p = make_demo_sample()
        print(p, p.stat().st_size, "bytes")
        return 0
    if args.out is None or not args.subjects:
        print("error: recon simulate fastmri-like needs --out DIR and --subjects N [N ...]")
        return 2
    for s in args.subjects:
        spec = FastMRILikeSpec(args.contrast, args.slices, args.coils, noise_rel=args.noise_rel, pixel_mm=args.pixel_mm)
        p = write_volume(args.out / f"brainweb{s:02d}_{args.contrast.lower()}.h5", s, spec)
        print(p, f"{p.stat().st_size / 2**20:.1f} MiB")
    return 0
