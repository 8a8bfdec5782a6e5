"""BART on the real T1 file with the pipeline's own masks: the classical reference numbers of the user's path.

    python -m benchmarks.bart_reference [--file ../shared/data/fastmri_format/brain_t1_8ch_real.h5]

For each mask span (`recon.data.masks.SPANS`) and centre fraction: the equispaced 4x mask that
`recon reconstruct --mask equispaced --accel 4` applies, then BART `ecalib -m 2` + `pics -S -R W:3:0:LAMBDA`
and `nlinv -m 2`, and with ``--tv-lambdas`` also `pics -S -i 1000 -R T:3:0:LAMBDA` (TV; pics' default 30
iterations leave it far from its minimiser: 28.7 dB against 30.8 at 300 and 31.6 at 1000 iterations on this
file), magnitudes RSS-combined over the map sets and cropped to the target. PSNR against the
file's `reconstruction_rss` (fastMRI data range), as written and after a least-squares intensity fit.
Needs the `bart` command (Debian package `bart`); the project does not depend on it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_report
from recon.data.io import center_crop, load_fastmri
from recon.data.masks import SPANS, make_mask
from recon.metrics import psnr

FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "fastmri_format" / "brain_t1_8ch_real.h5"


def write_cfl(path: Path, array: np.ndarray) -> None:
    """BART's .hdr/.cfl pair: complex64, column-major, dimensions padded to 16."""
    dims = array.shape + (1,) * (16 - array.ndim)
    path.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    np.asarray(array, np.complex64).ravel(order="F").tofile(path.with_suffix(".cfl"))


def read_cfl(path: Path) -> np.ndarray:
    dims = [int(d) for d in path.with_suffix(".hdr").read_text().splitlines()[1].split()]
    return np.fromfile(path.with_suffix(".cfl"), np.complex64, int(np.prod(dims))).reshape(dims, order="F")


def bart(*args: str, cwd: Path) -> None:
    subprocess.run(["bart", *args], cwd=cwd, check=True, capture_output=True)


def magnitude(path: Path, crop: tuple[int, int]) -> np.ndarray:
    """RSS over every dimension after the first two of a BART image, centre-cropped: float [rH, rW]."""
    img = read_cfl(path)
    mag = np.sqrt((np.abs(img) ** 2).reshape(img.shape[0], img.shape[1], -1).sum(-1))
    return center_crop(torch.from_numpy(mag), crop).numpy()


def scores(pred: np.ndarray, ref: np.ndarray) -> str:
    """PSNR as written and, in brackets, after a least-squares intensity fit."""
    a = float((pred * ref).sum() / (pred * pred).sum())
    return f"{psnr(ref, pred):.2f} ({psnr(ref, a * pred):.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=FILE)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.08, 0.12])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.005, 0.01])
    ap.add_argument("--tv-lambdas", type=float, nargs="*", default=[])
    ap.add_argument("--spans", nargs="+", choices=SPANS, default=list(SPANS))
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/bart_real_t1.md"))
    a = ap.parse_args(argv)
    if shutil.which("bart") is None:
        print("bart is not installed (Debian package `bart`): nothing to compare against")
        return 1
    with load_fastmri(a.file) as v:
        k, ref, header = v.kspace[0], v.target[0].astype(np.float64), v.header
    rows = ["| mask span | centre fraction | lines kept / acquired | achieved R | "
            + " | ".join(f"ecalib -m 2 + pics W {lam:g}" for lam in a.lambdas)
            + "".join(f" | ecalib -m 2 + pics -i 1000 T {lam:g}" for lam in a.tv_lambdas) + " | nlinv -m 2 |",
            "|---|---|---|---|" + "---|" * (len(a.lambdas) + len(a.tv_lambdas) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for span in a.spans:
            for cf in a.fractions:
                m = make_mask("equispaced", k.shape[-2:], 4.0, cf, seed=0, acquired=header.acquired_lines, span=span)
                write_cfl(d / "ksp", np.transpose(k * m.mask.numpy(), (1, 2, 0))[:, :, None, :])
                bart("ecalib", "-m", "2", "ksp", "maps", cwd=d)
                cells = []
                for lam in a.lambdas:
                    bart("pics", "-S", "-R", f"W:3:0:{lam}", "ksp", "maps", "pics", cwd=d)
                    cells.append(scores(magnitude(d / "pics", ref.shape), ref))
                for lam in a.tv_lambdas:
                    bart("pics", "-S", "-i", "1000", "-R", f"T:3:0:{lam}", "ksp", "maps", "pics", cwd=d)
                    cells.append(scores(magnitude(d / "pics", ref.shape), ref))
                bart("nlinv", "-m", "2", "ksp", "nlinv", cwd=d)
                cells.append(scores(magnitude(d / "nlinv", ref.shape), ref))
                left, right = header.acquired_lines
                kept = int(m.mask[left:right].sum())
                rows.append(f"| {span} | {cf:g} | {kept} / {right - left} | {m.acceleration:.2f} | "
                            + " | ".join(cells) + " |")
                print(rows[-1], flush=True)
    write_report(a.report, [
        "# BART on the real T1 file, the pipeline's equispaced 4x masks", "",
        f"Command: `{' '.join(['python -m benchmarks.bart_reference', *(sys.argv[1:] if argv is None else argv)])}` "
        f"({a.file.name}, slice 0; BART "
        f"{subprocess.run(['bart', 'version'], capture_output=True, text=True).stdout.strip()}).", "",
        "PSNR dB against `reconstruction_rss` (fastMRI data range), as written and, in brackets, after a least-squares "
        "intensity fit. `fastmri` span = the masks `recon reconstruct` applies by default (fastMRI's mask functions "
        "over all 256 phase lines, padding zeroed); `acquired` = `--mask-span acquired`.", "", *rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
