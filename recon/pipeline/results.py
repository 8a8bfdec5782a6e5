"""The outputs of one reconstructed file: NAME.json's summary (metrics, warnings), NAME.h5, the figure,
NIfTI / DICOM exports, and the calibrated 95% intervals."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recon import metrics
from recon.pipeline.outdir import output_paths, source_record
from recon.pipeline.volume import VERSION, ReconstructConfig, VolumeResult
from recon.pipeline.writers import export_dicom, export_nifti, json_safe, write_json, write_panel, write_result_h5
from recon.problems.ct import HU_RANGE, metric_image


# ---------------------------------------------------------------------------
# summary and outputs
# ---------------------------------------------------------------------------
def _metric(fn: Callable[..., float], *args: Any) -> float | None:
    """A metric value, or None where it is undefined (non-finite, or an image too small for SSIM's window)."""
    try:
        value = float(fn(*args))
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _scores(result: VolumeResult, img: np.ndarray, slices: list[int]) -> dict[str, float | None]:
    if result.reference is None:
        return {"psnr": None, "ssim": None, "nmse": None}
    ref = result.reference[result.rows(slices)]
    if result.modality == "ct":  # HU clipped to [-1024, 2000], data range 3024
        ref, pred = metric_image(ref), metric_image(img)
        return {"psnr": _metric(metrics.psnr, ref, pred, HU_RANGE), "ssim": _metric(metrics.ssim, ref, pred, HU_RANGE),
                "nmse": _metric(metrics.nmse, ref, pred)}
    return {"psnr": _metric(metrics.psnr, ref, img), "ssim": _metric(metrics.ssim, ref, img),
            "nmse": _metric(metrics.nmse, ref, img)}


def prior_name(cfg: ReconstructConfig, modality: str) -> str:
    """The prior a run used: --prior, or the default of the file's modality (`cfg.weights` names a prior only when
    a posterior method runs; "" otherwise)."""
    return cfg.prior_name or (cfg.weights.get(modality) or {}).get("prior") or ""


def primary_method(cfg: ReconstructConfig, result: VolumeResult) -> str | None:
    """`cfg.primary` (default: the first of `cfg.solvers`), or the first method with output when it failed."""
    wanted = cfg.primary or cfg.solvers[0]
    if result.methods[wanted].means:
        return wanted
    return next((m for m in cfg.solvers if result.methods[m].means), None)


def plausibility_warnings(result: VolumeResult) -> list[str]:
    """Flags for results that ran but look wrong: k-space that disagrees with the file's own target, and
    method images far outside the range of the zero-filled / FBP image."""
    out = []
    init_name, init = result.initial
    if result.reference is not None and result.modality == "mri":
        err = _metric(metrics.nmse, result.reference, init)
        if err is None:
            out.append("the reference (reconstruction_rss) is all zero: PSNR, SSIM and NMSE are undefined (null)")
        elif err > 1.0:
            out.append(f"the zero-filled image disagrees with the file's reconstruction_rss (NMSE {err:.3g}): "
                       "corrupted k-space, or a target made from other data")
    top = float(np.percentile(np.abs(init), 99.9)) if init.size else 0.0
    for m, r in result.methods.items():
        if not r.means or result.modality != "mri" or top == 0.0:
            continue
        level = float(np.percentile(np.abs(np.stack(r.means)), 99.9))
        if not 0.1 * top <= level <= 10.0 * top:
            out.append(f"{m}: its image level ({level:.3g}) is far from the zero-filled image's ({top:.3g}); "
                       "check the result before use")
    return out


def summarise(path: Path, cfg: ReconstructConfig, result: VolumeResult) -> dict[str, Any]:
    """The NAME.json content (valid JSON: undefined metrics are null)."""
    init_name, init = result.initial
    solvers_out: dict[str, Any] = {init_name.replace("_", "-"): {**_scores(result, init, result.slices),
                                                                   "wall_time_s": 0.0, "nfe": 0, "mean_std": None}}
    for m, r in result.methods.items():
        entry: dict[str, Any] = {}
        if r.means:
            entry.update({**_scores(result, np.stack(r.means), r.slices), "wall_time_s": round(r.wall, 3),
                          "network_time_s": round(r.network, 3), "nfe": r.nfe,
                          "mean_std": float(np.mean(r.stds)) if r.stds else None})
            if r.slices != result.slices:
                entry["slices"] = r.slices
            if m in result.intervals:
                record = result.intervals[m][2]
                entry["coverage_95"] = record.get("coverage_95")
                entry["mean_interval_width"] = record["mean_interval_width"]
                entry["interval"] = {k: v for k, v in record.items() if k not in ("coverage_95", "mean_interval_width")}
        else:
            entry.update({"psnr": None, "ssim": None, "nmse": None, "nfe": r.nfe, "mean_std": None})
        if r.errors:
            entry["failed_slices"] = {str(i): msg for i, msg in r.errors.items()}
            if not r.means:
                entry["error"] = next(iter(r.errors.values()))
        solvers_out[m] = entry
    failed = bool(result.slice_errors) or any(r.errors for r in result.methods.values())
    primary = primary_method(cfg, result)
    warnings = list(result.warnings) + plausibility_warnings(result)
    if primary != (cfg.primary or cfg.solvers[0]):
        warnings.append(f"the primary method {cfg.primary or cfg.solvers[0]} failed; "
                        f"'reconstruction' holds {primary}")
    summary = {"file": str(path), "source": source_record(path), "settings_hash": cfg.settings_hash,
               "status": "partial" if failed else "ok", "modality": result.modality, "slices": result.slices,
               "n_slices_file": result.n_slices_file, "primary": primary,
               "acceleration": result.info.get("acceleration"), "mask": result.info.get("mask"),
               **{k: v for k, v in result.info.items() if k not in ("acceleration", "mask")},
               "prior": prior_name(cfg, result.modality), "weights": cfg.weights.get(result.modality),
               "seed": cfg.mask.seed, "units": "HU" if result.modality == "ct" else "magnitude",
               "solvers": solvers_out, "hparams": {m: r.hparams for m, r in result.methods.items() if r.means},
               "software_version": VERSION}
    if result.slice_errors:
        summary["failed_slices"] = {str(i): msg for i, msg in result.slice_errors.items()}
    if warnings:
        summary["warnings"] = warnings
    return json_safe(summary)


def _estimated_bytes(datasets: dict[str, np.ndarray | None], groups: dict[str, dict[str, np.ndarray | None]]) -> int:
    arrays = list(datasets.values()) + [a for g in groups.values() for a in g.values()]
    return sum(a.nbytes for a in arrays if a is not None)


def write_outputs(out_dir: Path, cfg: ReconstructConfig, summary: dict[str, Any], result: VolumeResult) -> None:
    """NAME.h5, NAME.png, exports, and NAME.json last. Images are stored as float32."""
    from recon.pipeline.outdir import check_free_space

    paths = output_paths(out_dir, result.name)
    primary = summary["primary"]
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    done = {m: r for m, r in result.methods.items() if r.means}
    means = {m: f32(np.stack(r.means)) for m, r in done.items()}
    stds = {m: f32(np.stack(r.stds)) for m, r in done.items() if r.stds}
    samples = {m: f32(np.stack(r.samples)) for m, r in done.items() if r.samples}  # [slices, N, H, W]
    groups = {f"solvers/{m}": {"mean": means[m], "std": stds.get(m), "samples": samples.get(m),
                               "lower_95": f32(result.intervals[m][0]) if m in result.intervals else None,
                               "upper_95": f32(result.intervals[m][1]) if m in result.intervals else None}
              for m in means}
    init_name, init = result.initial
    datasets = {"reconstruction": means.get(primary), "mean": means.get(primary), "std": stds.get(primary),
                "samples": samples.get(primary), init_name: f32(init),
                "reference": None if result.reference is None else f32(result.reference), **result.extra}
    attrs = {"solver": primary or "", "primary": primary or "", "solvers": ",".join(cfg.solvers),
             "prior": summary["prior"], "nfe": summary["solvers"].get(primary, {}).get("nfe", 0), "seed": cfg.mask.seed,
             "modality": result.modality, "units": summary["units"], "software_version": VERSION,
             "source_file": summary["file"], "settings_hash": cfg.settings_hash,
             "slices": json.dumps(done[primary].slices if primary else []), "n_slices_file": result.n_slices_file,
             "input_slices": json.dumps(result.slices),  # the rows of zero_filled / reference / mask
             "noise_std": summary.get("noise_std") if summary.get("noise_std") is not None else "",
             **{("mask_kind" if k == "mask" else k): _attr(v) for k, v in result.info.items()
                if k not in ("noise_std",)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    check_free_space(out_dir, _estimated_bytes(datasets, groups), str(paths["h5"]))
    group_attrs = {f"solvers/{m}": {"slices": json.dumps(done[m].slices)} for m in means}
    write_result_h5(paths["h5"], datasets, groups, attrs, group_attrs)
    _write_figure(paths["png"], result, means, stds, primary)
    if primary is not None:
        _write_exports(out_dir, cfg, result, means[primary], stds.get(primary), primary)
    write_json(paths["json"], summary)


def _attr(v: Any) -> Any:
    """An HDF5 attribute value: scalars as they are, None as "", anything else as JSON."""
    if v is None:
        return ""
    if isinstance(v, (bool, int, float, str, np.number)):
        return v
    return json.dumps(json_safe(v))


def _write_figure(path: Path, result: VolumeResult, means: dict[str, np.ndarray], stds: dict[str, np.ndarray],
                  primary: str | None) -> None:
    init_name, init = result.initial
    mid = len(result.slices) // 2
    s_mid = result.slices[mid]
    row = {m: result.methods[m].slices.index(s_mid) for m in means if s_mid in result.methods[m].slices}
    shown_primary = primary if primary in row else None
    if result.modality == "ct":
        show = {k: metric_image(means[k][j]) for k, j in row.items()}
        ref = None if result.reference is None else metric_image(result.reference[mid])
        first = metric_image(init[mid])
        title = f"{result.name}  slice {s_mid}  {result.info.get('views')} views  (HU + 1024)"
    else:
        show = {k: means[k][j] for k, j in row.items()}
        ref = None if result.reference is None else result.reference[mid]
        first = init[mid]
        title = f"{result.name}  slice {s_mid}  R={result.info['acceleration']:.1f} ({result.info['mask']})"
    std = stds[shown_primary][row[shown_primary]] if shown_primary in stds else None
    width, calibrated = None, True
    if shown_primary in result.intervals:
        lower, upper, record = result.intervals[shown_primary]
        width, calibrated = upper[row[shown_primary]] - lower[row[shown_primary]], bool(record.get("calibrated"))
    write_panel(path, ref, first, show, std, shown_primary or "", title, first_name=init_name.replace("_", "-"),
                interval_width=width, interval_calibrated=calibrated)


def _write_exports(out_dir: Path, cfg: ReconstructConfig, result: VolumeResult, mean: np.ndarray,
                   std: np.ndarray | None, primary: str) -> None:
    modality = "CT" if result.modality == "ct" else "MR"
    if "nifti" in cfg.export:
        export_nifti(out_dir / f"{result.name}_mean.nii.gz", mean)
        if std is not None:
            export_nifti(out_dir / f"{result.name}_std.nii.gz", std)
    if "dicom" in cfg.export:
        offset = 1024.0 if result.modality == "ct" else 0.0
        export_dicom(out_dir / f"{result.name}_mean_dicom", mean + offset, f"{primary} posterior mean", modality,
                     intercept=-offset)
        if std is not None:
            export_dicom(out_dir / f"{result.name}_std_dicom", std, f"{primary} posterior std", modality)


def add_intervals(result: VolumeResult, table: Any, alpha: float = 0.05, weights: dict[str, Any] | None = None) -> None:
    """95% intervals (`recon.intervals`) for every method with a std, calibrated by the prior's table (an entry
    fitted with other weights than the run's `weights` record holds for the method, `intervals.weights_key`, is
    flagged uncalibrated)."""
    from recon import intervals
    from recon.methods import typicality_sigmas

    for m, r in result.methods.items():
        if not (r.means and r.stds):
            continue
        shift = intervals.interval_shift(result.modality)  # CT: HU -> air at 0
        mean, std = np.stack(r.means) + shift, np.stack(r.stds)
        rel = float(np.median(intervals.relative_std(mean, std)))
        rule = result.info.get("magnitude", {}).get("rule") if result.modality == "mri" else None
        key = intervals.weights_key(m)
        sampler = intervals.sampler_settings(r.nfe, r.hparams, rule, **{key: (weights or {}).get(key)}) if r.hparams else None
        band = intervals.ct_band(result.info) if result.modality == "ct" else None
        fit = float(np.median(r.fits)) if r.fits else None
        lam, record = intervals.choose_lambda(table, m, result.modality, result.info.get("acceleration"), alpha, rel,
                                              sampler, band, fit, typicality_sigmas(m) if fit is not None else None,
                                              result.info.get("sampling", result.info.get("mask")),
                                              result.info.get("coils"))
        fitted = record.get("prior_fit")
        if fitted:
            fitted["per_slice"] = list(r.fits)
        if fitted and fitted["typical"] is False:
            statistic = fitted.get("statistic", "score norm")
            result.warnings.append(
                f"{m}: {intervals.fit_phrase(statistic)} poorly ({statistic} {fit:.3f} > "
                f"{fitted['threshold']:.3f}, the "
                f"limit on its validation images): the data may be unlike the images it was trained and calibrated "
                f"on ({record['data']}); the interval is flagged uncalibrated and a classical method may do better "
                f"here (compare with --solver {m},l1-wavelet,tv)")
        floor = record["floor"]
        lower, upper = intervals.interval(mean, std, lam, magnitude=result.modality == "mri", floor=floor)
        record["relative_std"] = rel
        if result.reference is not None:
            ref = result.reference[result.rows(r.slices)] + shift
            record["coverage_95"] = intervals.coverage(mean, std, ref, lam, floor)
        record["mean_interval_width"] = float((upper - lower)[intervals.object_mask(mean)].mean())
        result.intervals[m] = (lower - shift, upper - shift, record)
