"""The benchmark on the command line's own path: fastMRI-like files from BrainWeb test subjects, reconstructed
by `recon reconstruct` with default flags (maps from the file's own centre, noise estimated, native
resolution), one row per method and setting, numbers read from the JSON it writes.

    python -m benchmarks.user_path --work /tmp/user_path --subjects 51 52 --slices 1 \
        --settings random:4 random:8 equispaced:4 --report benchmarks/results/user_path.md

With ``--anatomy pkdata`` the files hold another anatomy instead: the first echo of the real complex chest and
abdomen images in ``../shared/data/complex`` (ISMRM 2012 fat-water challenge; evaluation data, never
training data), acquired by 12 simulated coils with the same readout oversampling and noise: what the
brain-trained prior, U-Net and interval table meet on a scan unlike their data.

With ``--pixel-mm 0.7`` the BrainWeb files have fastMRI's brain resolution (0.7 mm pixels, 320 x 272 recon size)
instead of the 1 mm that the prior and the U-Net were trained at: whether they transfer across pixel sizes.

With ``--single-coil`` each file is first made single-coil (fastMRI's ``singlecoil`` layout: the coils combined
into one virtual coil of uniform sensitivity, `recon.data.simulate.fastmri_like.write_single_coil`), what a
user of fastMRI's single-coil track runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_report
from recon.cli import main as cli
from solvers.posterior import OBJECT_LEVEL

METHODS = "dds,l1-wavelet,unet,zero-filled"


def make_files(folder: Path, subjects: list[int], n_slices: int, pixel_mm: float = 1.0) -> list[Path]:
    """fastMRI-like files (`recon.data.simulate.fastmri_like`), written once and reused."""
    from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in subjects:
        p = folder / (f"brainweb{s:02d}_t1w_{n_slices}sl.h5" if pixel_mm == 1.0
                      else f"brainweb{s:02d}_t1w_{n_slices}sl_{pixel_mm:g}mm.h5")
        if not p.exists():
            write_volume(p, s, FastMRILikeSpec(n_slices=n_slices, pixel_mm=pixel_mm))
        paths.append(p)
    return paths


PKDATA = ("PKdata1", "PKdata2", "PKdata7", "PKdata11", "PKdataset16", "PKdataset17")
PKDATA_COILS = 12


def make_pkdata_files(folder: Path, names: tuple[str, ...] = PKDATA, echo: int = 0) -> list[Path]:
    """fastMRI-like files of the real complex images ``complex/NAME.h5`` (one slice each, recon size = the
    image's, 12 coils), written once and reused."""
    import h5py

    from recon.data.brainweb import SHARED_DATA
    from recon.data.simulate.fastmri_like import FastMRILikeSpec, write_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        p = folder / f"{name.lower()}_echo{echo}.h5"
        if not p.exists():
            src = SHARED_DATA / "complex" / f"{name}.h5"
            with h5py.File(src) as f:
                image = f["images"][echo]
            write_images(p, image[None] / np.percentile(np.abs(image), 99), FastMRILikeSpec(n_coils=PKDATA_COILS),
                         {"acquisition": "CHEST_ABDOMEN_SIMULATED_COILS", "patient_id": name,
                          "source": f"{src.name} echo {echo} (ISMRM 2012 fat-water challenge), coils and noise "
                                    "simulated by diffrecon (recon.data.simulate.fastmri_like.write_images)"}, seed=i)
        paths.append(p)
    return paths


def make_single_coil_files(files: list[Path], folder: Path) -> list[Path]:
    """Single-coil versions of fully sampled multi-coil `files` (`write_single_coil`), written once and reused."""
    from recon.data.simulate.fastmri_like import write_single_coil

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        p = folder / f.name
        if not p.exists():
            write_single_coil(f, p)
        out.append(p)
    return out


def reconstruct(files: list[Path], out: Path, methods: str, mask: str, accel: float, extra: list[str] = ()) -> None:
    """`recon reconstruct FILES --out OUT --solver METHODS --mask MASK --accel R` (skips finished files)."""
    rc = cli(["reconstruct", *map(str, files), "--out", str(out), "--solver", methods, "--mask", mask,
              "--accel", str(accel), "--quiet", *extra])
    if rc != 0:
        raise RuntimeError(f"recon reconstruct exited {rc} for {out}")


OBJECT_FRACTION = 0.1  # object pixels: reference >= this fraction of its volume max


def object_psnr(reference: np.ndarray, pred: np.ndarray) -> float:
    """PSNR over the object pixels only (reference >= OBJECT_FRACTION of its max), peak = the reference's max:
    the fastMRI convention without the background, where `reconstruction_rss` holds the RSS of the coils' noise."""
    obj = reference >= OBJECT_FRACTION * reference.max()
    mse = float(np.mean((reference[obj] - pred[obj]) ** 2))
    return 10 * np.log10(float(reference.max()) ** 2 / mse)


def scores(folders: list[Path], files: list[Path], methods: list[str],
           variants: dict[str, Path] | None = None) -> dict[str, dict[str, list[float]]]:
    """{column: {"psnr", "ssim", "object_psnr": per-file values}} read from the outputs in `folders` (the first
    folder holding a method's result for a file is used) and, for each ``variants`` label, from that folder's
    primary method (a method run with other settings, e.g. ``--set ccdf.init=unet``); files without every
    column are left out."""
    import h5py

    columns = [*methods, *(variants or {})]
    out = {c: {"psnr": [], "ssim": [], "object_psnr": []} for c in columns}
    for f in files:
        found = {}
        for d in folders:
            j = d / f"{f.stem}.json"
            if j.exists():
                with h5py.File(d / f"{f.stem}.h5") as h:
                    ran = set(h["solvers"]) if "solvers" in h else set()
                for m, s in json.loads(j.read_text())["solvers"].items():
                    if m in ran:   # a method this run wrote (zero-filled is scored in every JSON)
                        found.setdefault(m, (d, m, s))
        for label, d in (variants or {}).items():
            j = d / f"{f.stem}.json"
            if j.exists():
                record = json.loads(j.read_text())
                m = record["primary"]
                if m and "psnr" in record["solvers"].get(m, {}):
                    found[label] = (d, m, record["solvers"][m])
        if not all(c in found for c in columns):
            continue
        for c in columns:
            d, m, s = found[c]
            with h5py.File(d / f"{f.stem}.h5") as h:
                obj = object_psnr(h["reference"][()], h[f"solvers/{m}/mean"][()])
            for key, v in (("psnr", s["psnr"]), ("ssim", s["ssim"]), ("object_psnr", obj)):
                out[c][key].append(v)
    return out


def interval_rows(folders: list[Path], files: list[Path], methods: list[str]) -> dict[str, dict[str, list]]:
    """{method: {"coverage", "width", "calibrated": per-file values}} for the methods whose JSON reports a 95%
    interval (`coverage_95`, `mean_interval_width`, `interval.calibrated`), each file's method from the first of
    `folders` that holds it."""
    out: dict[str, dict[str, list]] = {}
    for f in files:
        found: dict[str, dict] = {}
        for folder in folders:
            j = folder / f"{f.stem}.json"
            for m, s in (json.loads(j.read_text())["solvers"].items() if j.exists() else ()):
                if m in methods and "coverage_95" in s:
                    found.setdefault(m, s)
        for m, s in found.items():
            row = out.setdefault(m, {"coverage": [], "width": [], "calibrated": []})
            row["coverage"].append(s["coverage_95"])
            row["width"].append(s["mean_interval_width"])
            row["calibrated"].append(bool(s.get("interval", {}).get("calibrated")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data/fastmri_like"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--extra-work", type=Path, action="append", default=[],
                    help="another output folder of the same files and settings (e.g. a method run separately); "
                         "its methods join the table")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FOLDER",
                    help="a column LABEL from FOLDER/MASK-R: the same files run with other settings (its primary "
                         "method, e.g. --solver ccdf --set ccdf.init=unet)")
    ap.add_argument("--anatomy", choices=("brainweb", "pkdata"), default="brainweb",
                    help="brainweb: the test subjects' fastMRI-like files; pkdata: chest and abdomen images "
                         "(module docstring)")
    ap.add_argument("--single-coil", action="store_true",
                    help="combine each file's coils into one first (fastMRI's single-coil layout; module docstring)")
    ap.add_argument("--subjects", type=int, nargs="+", default=[51, 52, 53, 54])
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--pixel-mm", type=float, default=1.0,
                    help="in-plane pixel size of the BrainWeb files (module docstring)")
    ap.add_argument("--slice-range", default=None, metavar="A:B",
                    help="reconstruct only these slices of each file (passed as recon reconstruct --slices)")
    ap.add_argument("--settings", nargs="+", default=["random:4", "random:8", "equispaced:4"])
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--report", type=Path, default=None,
                    help="default benchmarks/results/user_path.md (brainweb), user_path_other_anatomy.md (pkdata)")
    ap.add_argument("--device", default="cpu", help="passed to recon reconstruct")
    ap.add_argument("--report-only", action="store_true",
                    help="reconstruct nothing: tabulate the files already in --work (the table says how many)")
    a = ap.parse_args(argv)
    if a.report is None:
        a.report = Path("benchmarks/results") / ("user_path_other_anatomy.md" if a.anatomy == "pkdata" else
                                                 "user_path_single_coil.md" if a.single_coil else "user_path.md")
    files = (make_files(a.data / "test", a.subjects, a.slices, a.pixel_mm) if a.anatomy == "brainweb"
             else make_pkdata_files(a.data / "pkdata"))
    if a.single_coil:
        files = make_single_coil_files(files, a.data / "single_coil")
    methods = a.methods.split(",")
    if any("=" not in v for v in a.variant):
        ap.error("--variant expects LABEL=FOLDER")
    variants = dict(v.split("=", 1) for v in a.variant)
    columns = [*methods, *variants]
    versus = [m for m in ("l1-wavelet", "tv", "unet") if m in methods and "dds" in methods]  # dds - each, where both ran
    head = "| setting | " + " | ".join(columns) + "".join(f" | dds - {m}" for m in versus) + " | files |"
    rule = "|---|" + "---|" * (len(columns) + len(versus) + 1)
    full, obj = [head, rule], [head, rule]
    cov = ["| setting | method | coverage (95% interval) | mean width | files called calibrated |", "|---|---|---|---|---|"]
    for setting in a.settings:
        mask, accel = setting.split(":")
        out = a.work / setting.replace(":", "-")
        if not a.report_only:
            reconstruct(files, out, a.methods, mask, float(accel),
                        ["--device", a.device, *(["--slices", a.slice_range] if a.slice_range else [])])
        sc = scores([out, *(d / out.name for d in a.extra_work)], files, methods,
                    {label: Path(d) / out.name for label, d in variants.items()})
        n = len(sc[columns[0]]["psnr"])
        if not n:
            continue
        for lines, key in ((full, "psnr"), (obj, "object_psnr")):
            mean = {c: float(np.mean(sc[c][key])) for c in columns}
            cells = [f"{mean[c]:.2f}" + (f" / {np.mean(sc[c]['ssim']):.3f}" if key == "psnr" else "") for c in columns]
            gaps = "".join(f" | {mean.get('dds', np.nan) - mean[m]:+.2f}" for m in versus)
            lines.append(f"| {mask} {accel}x | " + " | ".join(cells) + gaps + f" | {n} |")
        print(full[-1], flush=True)
        for m, r in interval_rows([out, *(d / out.name for d in a.extra_work)], files, methods).items():
            cov.append(f"| {mask} {accel}x | {m} | {np.mean(r['coverage']):.3f} (min {min(r['coverage']):.3f}) | "
                       f"{np.mean(r['width']):.3f} | {sum(r['calibrated'])} of {len(r['calibrated'])} |")
    files_flags = (f" --subjects {' '.join(map(str, a.subjects))} --slices {a.slices}" if a.anatomy == "brainweb"
                   else " --anatomy pkdata") + (" --single-coil" if a.single_coil else "") \
        + (f" --pixel-mm {a.pixel_mm:g}" if a.pixel_mm != 1.0 else "") \
        + (f" --slice-range {a.slice_range}" if a.slice_range else "")
    command = (f"python -m benchmarks.user_path --work {a.work}{files_flags} --settings {' '.join(a.settings)} "
               f"--methods {a.methods}"
               + "".join(f" --extra-work {d}" for d in a.extra_work)
               + "".join(f" --variant {shlex.quote(v)}" for v in a.variant) + (" --report-only" if a.report_only else ""))
    target = "reconstruction_rss"
    if a.anatomy == "brainweb":
        title = "fastMRI-like BrainWeb test files"
        import h5py

        with h5py.File(files[0]) as f:
            recon_h, recon_w = f["reconstruction_rss"].shape[-2:]
        used = f" (slices {a.slice_range} of each)" if a.slice_range else ""
        about = (f"Files: BrainWeb test subjects {', '.join(map(str, a.subjects))} x {a.slices} slices{used} (T1w), 16 "
                 f"coils, 2x readout oversampling, correlated coil noise at the real T1 file's level, {a.pixel_mm:g} mm "
                 f"pixels, {recon_h} x {recon_w} recon size; default centre fraction.")
        if a.single_coil:
            title, target = title + ", single-coil", "reconstruction_esc"
            about += (" Then made single-coil (`--single-coil`: the 16 coils combined into one virtual coil of uniform "
                      "sensitivity with ESPIRiT maps of the fully sampled data, noise included; target "
                      "`reconstruction_esc`, the combined image's magnitude).")
    else:
        title = "another anatomy (chest and abdomen), `recon reconstruct` defaults"
        about = (f"Files: the first echo of {', '.join(PKDATA)} (`../shared/data/complex`, real complex chest and "
                 f"abdomen images, ISMRM 2012 fat-water challenge), one slice each at its own size (256 x 192, "
                 f"192 x 256 or 256 x 256), {PKDATA_COILS} simulated birdcage coils, 2x readout oversampling, "
                 "correlated coil noise at the real T1 file's level; default centre fraction. Nothing of the project "
                 "(prior, U-Net, interval table, hyper-parameters) saw these anatomies.")
    write_report(a.report, [
        f"# The user's path: {title}, `recon reconstruct` defaults" if a.anatomy == "brainweb"
        else f"# The user's path on {title}", "",
        f"Command: `{command}`", *([
            "", "Each --extra-work folder holds `recon reconstruct FILES --out FOLDER/MASK-R --solver METHODS --mask "
            "MASK --accel R` for the same files (the same masks: the zero-filled rows agree)."] if a.extra_work else []),
        *(["", "Each --variant folder holds the same files and masks run with other settings; its column is that "
            "run's primary method, and the run's JSON records its settings (`hparams`)."] if variants else []),
        "",
        f"{datetime.date.today()}, {machine()}.", "",
        f"{about} PSNR / SSIM: fastMRI convention per volume (data range = volume max of "
        f"`{target}`), mean over files. `unet` is the bundled `unet-brain-mri` (trained with random "
        "masks: equispaced is out of distribution for it; its model card).", "", *full, "",
        f"The same outputs, PSNR over the object only (reference >= {OBJECT_FRACTION:g} of its volume max; "
        f"the background of `{target}` is the magnitude of the coils' noise, which a network trained on such "
        "targets reproduces and the image-estimate methods predict with `--magnitude rss`, the default):", "",
        *obj, "",
        "The 95% intervals (`lower_95`, `upper_95` in each output file): coverage of "
        f"the object pixels (reference >= {OBJECT_LEVEL:g} of its slice max) against the reference, mean width "
        "(image units), and "
        "how many files' JSON called the interval calibrated (the table's data and settings match) rather than "
        "flagging it uncalibrated:", "", *cov])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
