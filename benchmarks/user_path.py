"""The benchmark on the command line's own path: fastMRI-like files from BrainWeb test subjects, reconstructed
by `recon reconstruct` with default flags (maps from the file's own centre, noise estimated, native
resolution), one row per method and setting, numbers read from the JSON it writes.

    python -m benchmarks.user_path --work /tmp/user_path --subjects 51 52 --slices 1 \
        --settings random:4 random:8 equispaced:4 --report benchmarks/results/user_path.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import write_report
from recon.cli import main as cli

METHODS = "dds,l1-wavelet,unet,zero-filled"


def make_files(folder: Path, subjects: list[int], n_slices: int) -> list[Path]:
    """fastMRI-like files (`recon.data.simulate.fastmri_like`), written once and reused."""
    from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in subjects:
        p = folder / f"brainweb{s:02d}_t1w_{n_slices}sl.h5"
        if not p.exists():
            write_volume(p, s, FastMRILikeSpec(n_slices=n_slices))
        paths.append(p)
    return paths


def reconstruct(files: list[Path], out: Path, methods: str, mask: str, accel: float, extra: list[str] = ()) -> None:
    """`recon reconstruct FILES --out OUT --solver METHODS --mask MASK --accel R` (skips finished files)."""
    rc = cli(["reconstruct", *map(str, files), "--out", str(out), "--solver", methods, "--mask", mask,
              "--accel", str(accel), "--quiet", *extra])
    if rc != 0:
        raise RuntimeError(f"recon reconstruct exited {rc} for {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data/fastmri_like"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--subjects", type=int, nargs="+", default=[51, 52, 53, 54])
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--settings", nargs="+", default=["random:4", "random:8", "equispaced:4"])
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/user_path.md"))
    ap.add_argument("--device", default="cpu", help="passed to recon reconstruct")
    ap.add_argument("--report-only", action="store_true",
                    help="reconstruct nothing: tabulate the files already in --work (the table says how many)")
    a = ap.parse_args(argv)
    files = make_files(a.data / "test", a.subjects, a.slices)
    lines = ["# The user's path: fastMRI-like BrainWeb test files, `recon reconstruct` defaults", "",
             f"Command: `python -m benchmarks.user_path --subjects {' '.join(map(str, a.subjects))} --slices {a.slices}"
             f" --settings {' '.join(a.settings)}`", "",
             "Files: 16 coils, 2x readout oversampling, correlated coil noise at the real T1 file's level, 1 mm, "
             "224 x 192 recon size. PSNR / SSIM: fastMRI convention per volume, mean over files.", "",
             "| setting | " + " | ".join(a.methods.split(",")) + " | dds - l1 | dds - U-Net | files |",
             "|---|" + "---|" * (len(a.methods.split(",")) + 3)]
    for setting in a.settings:
        mask, accel = setting.split(":")
        out = a.work / setting.replace(":", "-")
        if not a.report_only:
            reconstruct(files, out, a.methods, mask, float(accel), ["--device", a.device])
        psnr = {m: [] for m in a.methods.split(",")}
        ssim = {m: [] for m in a.methods.split(",")}
        done = [f for f in files if (out / f"{f.stem}.json").exists()]
        if not done:
            continue
        for f in done:
            s = json.loads((out / f"{f.stem}.json").read_text())["solvers"]
            for m in psnr:
                psnr[m].append(s[m]["psnr"])
                ssim[m].append(s[m]["ssim"])
        mean = {m: float(np.mean(v)) for m, v in psnr.items()}
        cells = [f"{mean[m]:.2f} / {np.mean(ssim[m]):.3f}" for m in psnr]
        d_l1 = mean.get("dds", np.nan) - mean.get("l1-wavelet", np.nan)
        d_unet = mean.get("dds", np.nan) - mean.get("unet", np.nan)
        lines.append(f"| {mask} {accel}x | " + " | ".join(cells) + f" | {d_l1:+.2f} | {d_unet:+.2f} | {len(done)} |")
        print(lines[-1], flush=True)
    write_report(a.report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
