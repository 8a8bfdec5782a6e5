"""Fit the interval calibration table of a prior on validation data, on the command line's own path, and
report coverage and width on test data before and after calibration.

    python -m benchmarks.calibrate_intervals --data benchmarks/data/fastmri_like --work /tmp/intervals \
        --val-subjects 49 50 --test-subjects 51 52 53 54 --slices 12 --accels 4 8 --methods dds

1. writes fastMRI-like files (`recon.data.simulate.fastmri_like`) for the validation and test subjects (cached),
   then one file per slice, so that a run stopped part-way (a session's end) resumes at the next slice;
2. runs `recon reconstruct` on them with default flags (random mask at each acceleration), one method at a time
   into WORK/METHOD/{val,test}-RX (so a method added later does not recompute the others); it skips the slices
   already done, so the command can be rerun until every slice is reconstructed;
3. fits lambda per method and acceleration band on the validation outputs (`recon.intervals.fit_entry`,
   conformal risk control, alpha = 0.05) and puts the entries into `priors/weights/PRIOR.calibration.json`
   (entries of other methods and bands already there are kept);
   The fit is always on the default magnitude rule (`recon reconstruct --magnitude rss`): outputs written
   as |x| (with --magnitude image, or before the rule existed: no "magnitude" in their JSON) are converted
   on reading (`as_rss`), exactly, since the rule is a function of |x| and the recorded noise std;
4. on the test outputs: coverage of the object pixels and mean width with the Gaussian rule (1.96 std)
   and with the calibrated lambda, and Spearman(width, |error|) over 8 x 8 patches; a markdown table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from recon import intervals as iv
from recon.methods import POSTERIOR_METHODS
from recon.problems.mri import rss_from_magnitude
from benchmarks.common import write_report
from benchmarks.user_path import make_files, reconstruct
from recon.cli import main as cli


def split_slices(files: list[Path], folder: Path) -> list[Path]:
    """One fastMRI file per slice of each file (written once; attributes and header kept, `max` per slice)."""
    from recon.data.io import write_fastmri

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in files:
        with h5py.File(src) as f:
            n = f["kspace"].shape[0]
            attrs = {k: v for k, v in f.attrs.items() if k not in ("max", "norm")}
            recon_size = f["reconstruction_rss"].shape[-2:]
            for k in range(n):
                p = folder / f"{src.stem}_s{k:02d}.h5"
                if not p.exists():
                    write_fastmri(p, f["kspace"][k:k + 1], target=f["reconstruction_rss"][k:k + 1],
                                  recon_size=recon_size, attrs=attrs)
                out.append(p)
    return out


def collect(out: Path, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Display-unit mean, std and reference slices [S, H, W] of one method over an output folder, and the
    sampler settings they were made with (`recon.intervals.sampler_settings`; the same for every file), as
    `collect_file` gives them."""
    parts = [collect_file(h5, method) for h5 in sorted(out.rglob("*.h5"))]
    if any(p[3] != parts[0][3] for p in parts):
        raise ValueError(f"{out}: {method} was run with different settings across files")
    return (*(np.concatenate([p[i] for p in parts]) for i in range(3)), parts[0][3])


def collect_file(h5: Path, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """`collect` for one output file (its JSON beside it). CT values are shifted so that air is 0
    (`recon.intervals.interval_shift`), as the pipeline does before intervals and object masks."""
    record = json.loads(h5.with_suffix(".json").read_text())
    shift = iv.interval_shift(record["modality"])
    key = iv.weights_key(method)
    with h5py.File(h5) as f:
        g = f[f"solvers/{method}"]
        slices = json.loads(g.attrs["slices"])
        done = json.loads(f.attrs["input_slices"])  # rows of `reference`
        rows = [done.index(s) for s in slices] if "reference" in f else []
        return (as_rss(g["mean"][()], record, slices) + shift, g["std"][()], f["reference"][()][rows] + shift,
                iv.sampler_settings(record["solvers"][method]["nfe"], record["hparams"][method],
                                    "rss" if record["modality"] == "mri" else None,
                                    **{key: record.get("weights", {}).get(key)}))


def run_statistics(out: Path, method: str) -> np.ndarray:
    """Per slice, the typicality statistic the pipeline recorded for `method` (``interval.prior_fit.per_slice``:
    the U-Net's data misfit) over the outputs in `out`."""
    values = []
    for j in sorted(out.rglob("*.json")):
        fit = json.loads(j.read_text())["solvers"][method]["interval"].get("prior_fit")
        if fit is None:
            raise ValueError(f"{j}: {method} recorded no typicality statistic (rerun these outputs)")
        values += fit["per_slice"]
    return np.asarray(values, dtype=np.float64)


def coil_count(record: dict) -> int:
    """The coil count of an MRI output: recorded (``coils``), or read off its source file (outputs written before
    the record had it)."""
    if "coils" in record:
        return int(record["coils"])
    with h5py.File(record["source"]["path"]) as src:
        return int(src["kspace"].shape[1])


def as_rss(mean: np.ndarray, record: dict, slices: list[int]) -> np.ndarray:
    """A posterior method's means [S, H, W] of one MRI output under the default magnitude rule ("rss"): as
    written when the output used it (and CT outputs as they are), else ``rss_from_magnitude`` of |x| with
    each slice's recorded noise std and the source file's coil count."""
    if record["modality"] != "mri" or record.get("magnitude", {}).get("rule", "image") == "rss":
        return mean
    std = {n["slice"]: n["noise_std"] for n in record["noise"]}
    return rss_from_magnitude(mean, np.array([std[s] for s in slices])[:, None, None], coil_count(record))


def patch_spearman(width: np.ndarray, err: np.ndarray, ref: np.ndarray, size: int = 8) -> float:
    """Spearman rank correlation of the mean interval width and mean |error| over object-covering patches."""
    from scipy.stats import spearmanr

    w, e = [], []
    obj = iv.object_mask(ref)
    for k in range(width.shape[0]):
        for i in range(0, width.shape[1] - size + 1, size):
            for j in range(0, width.shape[2] - size + 1, size):
                if obj[k, i:i + size, j:j + size].mean() > 0.5:
                    w.append(width[k, i:i + size, j:j + size].mean())
                    e.append(err[k, i:i + size, j:j + size].mean())
    return float(spearmanr(w, e).statistic)


def sparsification(width: np.ndarray, error: np.ndarray, obj: np.ndarray) -> dict:
    """Sparsification of the object pixels by interval width (`recon.benchmark.stats`): curve, oracle, AUSE (area
    between them; 0 = widths rank the errors perfectly) and AURG (area between the random ordering's flat 1 and the
    curve; > 0 = better than random)."""
    from recon.benchmark.stats import sparsification_curves

    f, curve, oracle = sparsification_curves(error[obj], width[obj], steps=20)

    def area(y: np.ndarray) -> float:
        return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(f)))

    return {"fractions": f.tolist(), "curve": curve.tolist(), "oracle": oracle.tolist(),
            "ause": area(curve - oracle), "aurg": area(1.0 - curve)}


def save(table: iv.CalibrationTable, rows: list[dict], a: argparse.Namespace, table_file: Path) -> None:
    """Write the table and the markdown report (after every band, so a stopped run keeps them)."""
    table.save(table_file)
    if a.ct:
        title = "# Calibrated 95% intervals (head CT, `recon reconstruct` defaults)"
        command = (f"python -m benchmarks.calibrate_intervals --ct {a.ct} --ct-val {a.ct_val} --ct-test {a.ct_test} "
                   f"--work WORK --methods {' '.join(a.methods)}")
        data = ["Values in HU shifted so that air is 0 (`recon.intervals.interval_shift`, as the pipeline does); "
                "object pixels: shifted reference >= 10% of the slice max."]
    else:
        title = "# Calibrated 95% intervals (fastMRI-like BrainWeb, `recon reconstruct` defaults)"
        command = (f"python -m benchmarks.calibrate_intervals --work WORK --slices {a.slices} --test-slices "
                   f"{a.test_slices} --accels {' '.join(f'{x:g}' for x in a.accels)} --methods {' '.join(a.methods)}")
        data = ["Means under the default magnitude rule (`--magnitude rss`, the fastMRI target the image predicts); "
                "outputs written as |x| are converted on reading (`as_rss`: exact, a function of |x| and the "
                "recorded noise std)."]
    lines = [title, "", f"Command: `{command}`", "",
             "Coverage = fraction of object pixels (reference >= 10% of the slice max) inside the interval; width "
             "in % of the reference max; Spearman of width vs |error| over 8x8 object patches.", "", *data, "",
             "Certified: the expected fraction of uncovered object pixels that conformal risk control guarantees "
             "(`recon.intervals.fit_entry`: 0.05 needs >= 19 validation slices; with fewer, lambda is the CRC "
             "lambda at 0.10).", "",
             "AUSE / AURG: area between the sparsification curve of the calibrated width and the oracle's / the "
             "random ordering's (`recon.benchmark.stats.sparsification_curves`; curves in the JSON and PNG beside this file).", "",
             "| method | setting | val slices | lambda (CRC) | certified | lambda (RCPS) | val coverage | test coverage, 1.96 std | "
             "test coverage, calibrated | width 1.96 std | width calibrated | Spearman | AUSE | AURG | test slices |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['n_val']} | {r['lambda']:.2f} | {r['certified_alpha']:g} | "
                     f"{'infeasible' if r['rcps_lambda'] is None else format(r['rcps_lambda'], '.2f')} | "
                     f"{r['val_cov']:.3f} | {r['test_cov_gauss']:.3f} | {r['test_cov']:.3f} | "
                     f"{100 * r['width_gauss'] / r['ref_max']:.2f}% | {100 * r['width'] / r['ref_max']:.2f}% | "
                     f"{r['spearman']:.2f} | {r['sparsification']['ause']:.3f} | {r['sparsification']['aurg']:.3f} | "
                     f"{r['n_test']} |")
    if not a.ct:
        lines += ["", "Data unlike the calibration set (the real 8-coil T1 file, evaluation only): "
                      "`benchmarks/results/intervals_real_t1.md`."]
    write_report(a.report, lines)
    a.report.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    plot_sparsification(rows, a.report.with_suffix(".png"))


def plot_sparsification(rows: list[dict], path: Path) -> None:
    """Sparsification curves (calibrated width) and their oracles, one colour per method and band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for i, r in enumerate(rows):
        sp, c = r["sparsification"], f"C{i}"
        ax.plot(sp["fractions"], sp["curve"], color=c, label=f"{r['method']} {r['setting']} (AUSE {sp['ause']:.3f})")
        ax.plot(sp["fractions"], sp["oracle"], color=c, ls=":")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(xlabel="fraction of object pixels removed (widest interval first)", ylabel="mean |error| left / all",
           title="Sparsification (dotted: oracle)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(outputs: list[Path], methods: list[str]) -> list[str]:
    """Markdown rows for `recon reconstruct` outputs with a reference (e.g. the real T1 file): PSNR, coverage and
    width (% of the reference max) with 1.96 std and with the lambda the pipeline chose, and whether it called that
    lambda calibrated."""
    rows = ["| file | method | PSNR | lambda | calibrated | coverage, 1.96 std | coverage, pipeline's lambda | "
            "width 1.96 std | width, pipeline's lambda |", "|---|---|---|---|---|---|---|---|---|"]
    g = iv.gaussian_lambda(0.05)
    for h5 in outputs:
        record = json.loads(h5.with_suffix(".json").read_text())
        for m in methods:
            tm, ts, tr, _ = collect_file(h5, m)
            s = record["solvers"][m]
            lam = s["interval"]["lambda"]
            floor = s["interval"].get("floor", iv.method_floor(m))
            obj, peak = iv.object_mask(tr), float(tr.max())
            widths = []
            for x in (g, lam):
                lo, hi = iv.interval(tm, ts, x, magnitude=record["modality"] == "mri", floor=floor)
                widths.append(float((hi - lo)[obj].mean()) / peak)
            rows.append(f"| {h5.parent.name}/{h5.stem} | {m} | {s['psnr']:.2f} | {lam:.2f} | "
                        f"{'yes' if s['interval']['calibrated'] else 'no'} | {iv.coverage(tm, ts, tr, g, floor):.3f} | "
                        f"{iv.coverage(tm, ts, tr, lam, floor):.3f} | {100 * widths[0]:.2f}% | {100 * widths[1]:.2f}% |")
    return rows


def fit_and_test(table: iv.CalibrationTable, method: str, modality: str, band: str, setting: str, val_out: Path,
                 test_out: Path, data: str) -> dict | None:
    """Fit `method`'s entry for one band on the outputs under `val_out`, put it in `table`, and measure it on the
    outputs under `test_out`: a report row (None when there are no outputs or too few validation slices)."""
    if not (any(val_out.rglob("*.h5")) and any(test_out.rglob("*.h5"))):
        print(f"skipped: {method} {setting}: no outputs in {val_out} or {test_out}", flush=True)
        return None
    mean, std, ref, sampler = collect(val_out, method)
    own = modality == "mri" and method not in POSTERIOR_METHODS  # the U-Net: no prior scores its runs
    try:
        entry = iv.fit_entry(method, modality, band, mean, std, ref, data=data, sampler=sampler,
                             sampling="random" if own else None,
                             coils=coil_count(json.loads(next(val_out.rglob("*.json")).read_text())) if own else None)
    except ValueError as e:  # no lambda on the grid reaches the level
        print(f"skipped: {e}", flush=True)
        return None
    if own:
        values = run_statistics(val_out, method)
        entry.typicality = {"max": round(iv.typicality_threshold(values), 4), "level": 0.05, "n_images": len(values),
                            "sigmas": [], "data": data, "statistic": "data misfit",
                            "range": [round(float(values.min()), 4), round(float(values.max()), 4)]}
    table.put(entry)
    tm, ts, tr, _ = collect(test_out, method)
    g, floor = iv.gaussian_lambda(0.05), entry.floor
    lo, hi = iv.interval(tm, ts, entry.lam, magnitude=modality == "mri", floor=floor)
    width = hi - lo
    obj = iv.object_mask(tr)
    return {"method": method, "setting": setting, "n_val": entry.n_images, "lambda": entry.lam, "floor": floor,
            "certified_alpha": entry.certified_alpha or entry.alpha, "rcps_lambda": entry.lam_rcps,
            "val_cov": entry.validation_coverage, "test_cov_gauss": iv.coverage(tm, ts, tr, g, floor),
            "test_cov": iv.coverage(tm, ts, tr, entry.lam, floor),
            "width_gauss": float((2 * g * iv.widened_std(tm, ts, floor))[obj].mean()),
            "width": float(width[obj].mean()), "ref_max": float(tr.max()),
            "spearman": patch_spearman(width, np.abs(tr - tm), tr), "n_test": tm.shape[0],
            "sparsification": sparsification(width, tr - tm, obj)}


def open_table(a: argparse.Namespace, notes: str) -> tuple[iv.CalibrationTable, Path]:
    """The table to update (``--table`` or the prior's) and its path; a new one with `notes` if there is none."""
    path = a.table or iv.table_path(a.prior)
    return (iv.CalibrationTable.load(path) if path.exists() else iv.CalibrationTable(a.prior, notes=notes)), path


def reconstruct_flags(a: argparse.Namespace) -> list[str]:
    """`recon reconstruct` flags every run gets: the prior, the device, and the smoke settings."""
    return ["--prior", a.prior, "--device", a.device, *(["--samples", "2", "--nfe", "5"] if a.smoke else [])]


def keep(rows: list[dict], row: dict | None) -> None:
    """Append a `fit_and_test` row (None: skipped) and print it."""
    if row:
        rows.append(row)
        print(json.dumps(row), flush=True)


def slice_range(text: str) -> range:
    """``A:B`` -> range(A, B)."""
    a, b = text.split(":")
    return range(int(a), int(b))


def reconstruct_ct(volume: Path, slices: range, out: Path, method: str, extra: list[str]) -> None:
    """`recon reconstruct VOLUME --slices i:i+1` per slice into OUT/sNNN (slices already done are skipped, so a
    stopped run resumes)."""
    for i in slices:
        folder = out / f"s{i:03d}"
        if (folder / f"{volume.stem}.json").exists():
            continue
        rc = cli(["reconstruct", str(volume), "--out", str(folder), "--solver", method, "--slices", f"{i}:{i + 1}",
                  "--quiet", "--overwrite", *extra])
        if rc != 0:
            raise RuntimeError(f"recon reconstruct exited {rc} for {folder}")


def main_ct(a: argparse.Namespace) -> int:
    """The CT table: `--ct VOLUME`, validation and test slice ranges, one entry per method (band "ct")."""
    table, table_file = open_table(a, "fitted by benchmarks/calibrate_intervals.py --ct on head CT validation "
                                      "slices, recon reconstruct defaults")
    rows: list[dict] = []
    for m in a.methods:
        val_out, test_out = a.work / m / "val", a.work / m / "test"
        if not a.fit_only:
            reconstruct_ct(a.ct, slice_range(a.ct_val), val_out, m, reconstruct_flags(a))
            reconstruct_ct(a.ct, slice_range(a.ct_test), test_out, m, reconstruct_flags(a))
        first = next(val_out.rglob("*.json"), None) if val_out.exists() else None
        band = iv.ct_band(json.loads(first.read_text())) if first else "ct"
        keep(rows, fit_and_test(table, m, "ct", band, band, val_out, test_out,
                                f"{a.ct.name} slices {a.ct_val} (validation), recon reconstruct defaults"))
    if not a.smoke and rows:
        save(table, rows, a, table_file)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data/fastmri_like"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--val-subjects", type=int, nargs="+", default=[49, 50])
    ap.add_argument("--test-subjects", type=int, nargs="+", default=[51, 52, 53, 54])
    ap.add_argument("--slices", type=int, default=12)
    ap.add_argument("--test-slices", type=int, default=4)
    ap.add_argument("--accels", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--methods", nargs="+", default=["dds"])
    ap.add_argument("--prior", default=None, help="default brain-mri-complex, or head-ct with --ct")
    ap.add_argument("--report", type=Path, default=None,
                    help="default benchmarks/results/intervals.md, or intervals_ct.md with --ct")
    ap.add_argument("--ct", type=Path, default=None, metavar="VOLUME",
                    help="fit the CT entries instead, on slices of this HU volume (e.g. ../shared/data/ct/head_ct.h5)")
    ap.add_argument("--ct-val", default="72:84", help="CT validation slices A:B")
    ap.add_argument("--ct-test", default="84:108", help="CT test slices A:B")
    ap.add_argument("--table", type=Path, default=None,
                    help="where the table goes (default priors/weights/PRIOR.calibration.json)")
    ap.add_argument("--device", default="cpu", help="passed to recon reconstruct")
    ap.add_argument("--fit-only", action="store_true",
                    help="reconstruct nothing: fit and report on the slices already in --work")
    ap.add_argument("--smoke", action="store_true", help="2 samples, 5 NFE, no table written: checks the plumbing")
    ap.add_argument("--evaluate", type=Path, nargs="+", default=None, metavar="OUT.h5",
                    help="only print coverage / width rows of these `recon reconstruct` outputs (--methods)")
    a = ap.parse_args(argv)
    a.prior = a.prior or ("head-ct" if a.ct else "brain-mri-complex")
    a.report = a.report or Path(f"benchmarks/results/intervals{'_ct' if a.ct else ''}.md")
    if a.evaluate:
        print("\n".join(evaluate(a.evaluate, a.methods)))
        return 0
    if a.ct:
        return main_ct(a)

    val = split_slices(make_files(a.data / "val", a.val_subjects, a.slices), a.data / "val-slices")
    test = split_slices(make_files(a.data / "test", a.test_subjects, a.test_slices), a.data / "test-slices")
    table, table_file = open_table(a, "fitted by benchmarks/calibrate_intervals.py on fastMRI-like BrainWeb "
                                      "validation files, recon reconstruct defaults")
    rows: list[dict] = []
    for accel in a.accels:
        for m in a.methods:
            val_out, test_out = a.work / m / f"val-R{accel:g}", a.work / m / f"test-R{accel:g}"
            if not a.fit_only:
                reconstruct(val, val_out, m, "random", accel, reconstruct_flags(a))
                reconstruct(test, test_out, m, "random", accel, reconstruct_flags(a))
            keep(rows, fit_and_test(table, m, "mri", iv.accel_band(accel), f"{accel:g}x", val_out, test_out,
                                    f"BrainWeb {a.val_subjects} x {a.slices} slices, fastMRI-like, random {accel:g}x"))
        if not a.smoke and rows:
            save(table, rows, a, table_file)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
