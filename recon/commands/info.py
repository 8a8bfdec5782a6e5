"""`recon info FILE.h5`: what a fastMRI file holds."""
from __future__ import annotations

import argparse
import sys

from recon.data.io import FastMRIFormatError, load_fastmri


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="fastMRI .h5 files")


def describe(path: str) -> str:
    with load_fastmri(path) as v:
        h = v.header
        left, right = h.acquired_lines
        acc = v.acceleration(0)
        lines = [
            f"file:          {path}",
            f"kspace:        {v.kspace.shape} ({'multi-coil' if v.multicoil else 'single-coil'}, {v.n_coils} coils)",
            f"acquisition:   {v.attrs.get('acquisition', 'unknown')}",
            f"encoded size:  {h.encoded_size[0]} x {h.encoded_size[1]}   recon size: {h.recon_size[0]} x {h.recon_size[1]}",
            f"phase lines:   acquired [{left}, {right}) of {v.kspace.shape[-1]} (padding {left} left, {v.kspace.shape[-1] - right} right)",
            f"sampling:      {'fully sampled' if acc <= 1.0 else f'undersampled, acceleration {acc:.2f}'} (slice 0)",
            f"target:        {'none' if v.target is None else v.target.shape}",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            print(describe(path), flush=True)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            msg = str(e) if isinstance(e, FastMRIFormatError) else f"{path}: {e} ({type(e).__name__})"
            print(f"error: {msg}", file=sys.stderr, flush=True)
            failed += 1
    return 1 if failed else 0
