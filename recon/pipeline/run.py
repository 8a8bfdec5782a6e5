"""`recon reconstruct`: fastMRI files (and CT volumes / sinograms) -> posterior mean, uncertainty,
baselines, metrics and figures, one set of outputs per input file."""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from recon import metrics
from recon.problems.ct import HU_RANGE, CTProblem, CTSpec, metric_image, simulated_ct_problem
from operators.fft import ifft2c, rss
from recon.data.io import FastMRIFormatError, center_crop, load_fastmri
from recon.methods import MethodSettings, run_method
from recon.problems.noise import NoiseEstimationWarning, rescale_record
from recon.pipeline.writers import export_dicom, export_nifti, json_safe, write_json, write_panel, write_result_h5
from recon.problems.mri import MaskSpec, MRIProblem, prepare_mri_slice
from solvers.posterior import Posterior

VERSION = "0.1.0"


@dataclass
class ReconstructConfig:
    """Settings that apply to every input file.

    Attributes:
        solvers: method names in order; the primary method (`primary`, default the first) fills the
            top-level ``reconstruction``/``mean``/``std`` and the figure's error and std panels.
        mask: retrospective undersampling for fully sampled MRI inputs.
        ct: simulated CT acquisition for HU-volume inputs.
        slices: (start, stop) slice range, Python semantics; None = all.
        device: torch device.
        n_maps: ESPIRiT map sets; None = chosen from the data.
        noise_std: k-space noise std per real/imag part in the file's units; None = estimated per slice.
        primary: the primary method (None = the first of `solvers`).
        save_samples, save_maps: also store the posterior samples / coil maps.
        export: subset of {"nifti", "dicom"}.
        quiet: no progress bars.
        prior_name: recorded in the outputs.
        settings_hash: digest of every setting that changes results (recorded; reruns compare it).
    """

    solvers: list[str]
    mask: MaskSpec = field(default_factory=MaskSpec)
    ct: CTSpec = field(default_factory=CTSpec)
    slices: tuple[int | None, int | None] | None = None
    device: str = "cpu"
    n_maps: int | None = None
    noise_std: float | None = None
    primary: str | None = None
    save_samples: bool = False
    save_maps: bool = False
    export: tuple[str, ...] = ()
    quiet: bool = False
    prior_name: str = ""
    settings_hash: str = ""


class SliceError(ValueError):
    """One slice (or one method on one slice) could not be reconstructed; the message says why."""


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    return {"h5": out_dir / f"{name}.h5", "png": out_dir / f"{name}.png", "json": out_dir / f"{name}.json"}


def source_record(path: Path) -> dict[str, Any]:
    """Where an input came from and which version of it (size, modification time)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _written_by_us(path: Path) -> bool:
    """True for an HDF5 file that `write_outputs` wrote (it carries our `settings_hash` attribute)."""
    try:
        with h5py.File(path, "r") as f:
            return "settings_hash" in f.attrs and "software_version" in f.attrs
    except OSError:
        return False


def completed_state(out_dir: Path, name: str, source: dict[str, Any], settings_hash: str) -> str:
    """"complete" when NAME's outputs exist and were made from this input with these settings;
    "missing" (some output absent or unreadable), "settings" (other settings or a changed input file),
    "other-source" (another input file of the same name), or "foreign" (OUT/NAME.h5 exists and was not
    written by `recon reconstruct`: never overwritten)."""
    paths = output_paths(out_dir, name)
    if paths["h5"].exists() and not _written_by_us(paths["h5"]):
        return "foreign"
    if not all(p.exists() for p in paths.values()):
        return "missing"
    try:
        done = json.loads(paths["json"].read_text())
    except (OSError, ValueError):
        return "missing"
    previous = done.get("source") or {}
    if previous.get("path") != source["path"]:
        return "other-source"
    same_file = previous.get("size") == source["size"] and previous.get("mtime_ns") == source["mtime_ns"]
    if not same_file or done.get("settings_hash") != settings_hash:
        return "settings"
    return "complete"


def detect_modality(path: Path) -> str:
    """"mri" for fastMRI files (``kspace``), "ct" for HU volumes, sinogram files and DICOM folders."""
    if path.is_dir():
        return "ct"
    try:
        with h5py.File(path, "r") as f:
            if "kspace" in f:
                return "mri"
            if "volume" in f or "sinogram" in f:
                return "ct"
            raise FastMRIFormatError(f"{path}: no 'kspace' dataset (found: {sorted(f.keys())}); "
                                     "not a fastMRI file, CT volume or sinogram file")
    except OSError as e:
        raise FastMRIFormatError(f"{path}: not an HDF5 file ({e})") from None


def describe_error(err: BaseException, path: Path | str | None = None) -> str:
    """A user-facing message: the exception's text (without a leading "PATH: ", which the caller adds),
    with its type for anything that is not a known input error."""
    msg = str(err).strip().strip("'\"") or type(err).__name__
    if path is not None and msg.startswith(f"{path}: "):
        msg = msg[len(f"{path}: "):]
    if isinstance(err, (ValueError, OSError, KeyError)):
        return msg
    return f"{msg} ({type(err).__name__})"


# ---------------------------------------------------------------------------
# per-method volumes
# ---------------------------------------------------------------------------
@dataclass
class MethodVolume:
    """A method's per-slice outputs in display units (MRI magnitude, CT HU), the slices it succeeded on,
    the slices it failed on, and its costs."""

    slices: list[int] = field(default_factory=list)
    means: list[np.ndarray] = field(default_factory=list)
    stds: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    wall: float = 0.0
    network: float = 0.0
    nfe: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)

    def add(self, index: int, post: Posterior, display: Callable[[torch.Tensor], torch.Tensor],
            keep_samples: bool) -> None:
        """Record slice `index`; raises `SliceError` (and records nothing) for non-finite outputs."""
        mean = display(post.mean).cpu().numpy()
        std = samples = None
        if post.samples is not None and post.samples.shape[0] > 1:
            shown = display(post.samples)
            std = shown.std(0).cpu().numpy()
            samples = shown.cpu().numpy() if keep_samples else None
        if not np.isfinite(mean).all() or (std is not None and not np.isfinite(std).all()):
            raise SliceError("produced non-finite values (NaN or Inf)")
        self.slices.append(index)
        self.means.append(mean)
        if std is not None:
            self.stds.append(std)
        if samples is not None:
            self.samples.append(samples)
        self.wall += post.wall_time
        self.network += post.network_time
        self.nfe = post.nfe
        self.hparams = post.hparams


@dataclass
class VolumeResult:
    """Everything written for one input file.

    `slices` are the slices prepared without error; `reference`/`initial` rows follow them. Each method
    keeps its own slice list (a subset of `slices` when it failed on some).
    """

    name: str
    modality: str
    slices: list[int]
    reference: np.ndarray | None
    initial: tuple[str, np.ndarray]                 # ("zero_filled", ...) for MRI, ("fbp", ...) for CT
    methods: dict[str, MethodVolume]
    extra: dict[str, np.ndarray | None]              # mask / coil maps / sinogram
    info: dict[str, Any]                             # acceleration, mask kind, views, noise, ...
    n_slices_file: int = 0
    slice_errors: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = field(default_factory=dict)

    def rows(self, slices: list[int]) -> list[int]:
        """Row indices of `slices` in this result's arrays."""
        where = {s: j for j, s in enumerate(self.slices)}
        return [where[s] for s in slices]


def _slice_range(n: int, slices: tuple[int | None, int | None] | None, path: Path) -> list[int]:
    r = list(range(n)[slice(*slices)]) if slices else list(range(n))
    if not r:
        raise FastMRIFormatError(f"{path}: slice range {slices} selects none of its {n} slices")
    return r


def _run_methods(index: int, problem: MRIProblem | CTProblem, cfg: ReconstructConfig, settings: MethodSettings,
                 methods: dict[str, MethodVolume], display: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Every method on one slice; a method's failure is recorded against it and the others go on."""
    for m in cfg.solvers:
        try:
            methods[m].add(index, run_method(m, problem, settings), display, cfg.save_samples)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - reported per method and slice, the batch goes on
            methods[m].errors[index] = describe_error(e)


def _attempt(result: VolumeResult, index: int, path: Path, fn: Callable[[], Any]) -> Any:
    """``fn()``, or None with the failure recorded against slice `index` (one bad slice loses only itself)."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - reported per slice, the volume goes on
        result.slice_errors[index] = describe_error(e, path)
        return None


def _finish(result: VolumeResult, path: Path) -> VolumeResult:
    if not result.slices:
        detail = "; ".join(f"slice {i}: {msg}" for i, msg in result.slice_errors.items())
        raise SliceError(f"{path}: no slice could be reconstructed ({detail})")
    return result


# ---------------------------------------------------------------------------
# MRI
# ---------------------------------------------------------------------------
def intensity_scale(kspace: np.ndarray) -> float:
    """The factor that brings one slice's k-space [C, H, W] to a unit image scale: the 99th percentile of the
    zero-filled RSS image of ``kspace / scale`` is 1. Computed stably for files in any units (1e-25 to 1e30);
    raises `SliceError` for an all-zero slice."""
    k = np.asarray(kspace).astype(np.complex128)
    peak = float(np.abs(k).max())
    if not peak > 0:
        raise SliceError("k-space is all zero")
    img = rss(ifft2c(torch.from_numpy((k / peak).astype(np.complex64))))
    level = float(torch.quantile(img.flatten().float(), 0.99))
    if not level > 0:
        level = float(img.max())
    return peak * level


def _mri_display(problem: MRIProblem, scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def show(img: torch.Tensor) -> torch.Tensor:
        mag = problem.magnitude(img) if img.is_complex() else center_crop(img.abs(), problem.crop)
        return mag.double() * scale
    return show


def _prepare_mri(vol, i: int, cfg: ReconstructConfig) -> tuple[MRIProblem, float]:
    """Slice `i` as a problem in unit intensity scale, and the factor back to file units."""
    kspace = vol.kspace[i]
    target = vol.target[i] if vol.target is not None else None
    scale = intensity_scale(kspace)
    noise_std = None if cfg.noise_std is None else cfg.noise_std / scale
    with warnings.catch_warnings():  # a noise-estimation fallback is reported per slice, with the file
        warnings.simplefilter("ignore", NoiseEstimationWarning)
        problem = prepare_mri_slice(kspace / scale, vol.header, cfg.mask,
                                    target=None if target is None else target / scale, device=cfg.device,
                                    n_maps=cfg.n_maps, noise_std=noise_std)
    if problem.retrospective and problem.acceleration <= 1.0:
        raise SliceError(f"--accel {cfg.mask.acceleration:g} keeps every one of the acquired phase lines "
                         "(acceleration 1): there is nothing to reconstruct; use a larger --accel")
    return problem, scale


def run_mri_file(path: Path, cfg: ReconstructConfig, settings: MethodSettings) -> VolumeResult:
    from tqdm.auto import tqdm

    with load_fastmri(path) as vol:
        if not vol.multicoil:
            raise FastMRIFormatError(f"{path}: single-coil files are not supported by `reconstruct` (multi-coil needed)")
        slices = _slice_range(vol.n_slices, cfg.slices, path)
        methods = {m: MethodVolume() for m in cfg.solvers}
        result = VolumeResult(path.stem, "mri", [], None, ("zero_filled", np.zeros(0)), methods, {}, {},
                              n_slices_file=vol.n_slices)
        refs, zfs, masks, maps, noise = [], [], [], [], []
        problem = None
        for i in tqdm(slices, desc=path.stem, disable=cfg.quiet, leave=False):
            prepared = _attempt(result, i, path, lambda: _prepare_mri(vol, i, cfg))
            if prepared is None:
                continue
            problem, scale = prepared
            result.slices.append(i)
            zfs.append(problem.zero_filled().double().cpu().numpy() * scale)
            refs.append(None if problem.reference is None else problem.reference.double().cpu().numpy() * scale)
            masks.append(problem.mask.cpu().numpy())
            record = {k: v for k, v in (rescale_record(problem.noise, scale) or {}).items() if k != "coil_cov"}
            noise.append({"slice": i, "noise_std": problem.noise_std * scale, **record})
            if record.get("warning"):
                result.warnings.append(f"slice {i}: {record['warning']}")
            if cfg.save_maps:
                maps.append(problem.maps.cpu().numpy())
            _run_methods(i, problem, cfg, settings, methods, _mri_display(problem, scale))
    _finish(result, path)
    assert problem is not None
    result.reference = np.stack(refs) if all(r is not None for r in refs) else None
    result.initial = ("zero_filled", np.stack(zfs))
    result.extra = {"mask": np.stack(masks), "coil_maps": np.stack(maps) if maps else None}
    stds = [n["noise_std"] for n in noise]
    result.info = {"acceleration": round(problem.acceleration, 3), "mask": problem.mask_kind,
                   "retrospective": problem.retrospective, "noise_std": float(np.median(stds)),
                   "noise": noise, "calibration": getattr(problem, "calibration", None)}
    return result


# ---------------------------------------------------------------------------
# CT
# ---------------------------------------------------------------------------
def _ct_source(path: Path, cfg: ReconstructConfig) -> tuple[list[int], Callable[[int], CTProblem], dict[str, Any], int]:
    """The slices to do, a builder of slice `i`'s problem, the acquisition record and the file's slice count."""
    from recon.data.ct_files import read_ct_volume, read_sinogram

    is_sinogram = False
    if path.is_file():
        with h5py.File(path, "r") as f:
            is_sinogram = "sinogram" in f
    if is_sinogram:
        sino = read_sinogram(path)
        n = sino.data.shape[0]
        op = sino.geometry.operator()
        mu_w = sino.mu_water_per_mm if sino.mu_water_per_mm is not None else CTProblem.mu_water

        def measured(i: int) -> CTProblem:
            return CTProblem(torch.from_numpy(sino.data[i]).to(cfg.device), op, sino.geometry.pixel_size_mm, None, mu_w)
        info = {"views": len(sino.geometry.angles), "geometry": sino.geometry.kind, "simulated": False}
        return _slice_range(n, cfg.slices, path), measured, info, n
    vol = read_ct_volume(path)
    n = vol.hu.shape[0]

    def simulated(i: int) -> CTProblem:
        if min(vol.hu.shape[1:]) < 8:
            raise SliceError(f"image {vol.hu.shape[1]} x {vol.hu.shape[2]} is too small (at least 8 x 8 pixels)")
        return simulated_ct_problem(vol.hu[i], vol.spacing_mm_xyz[0], cfg.ct, cfg.device)
    info = {"views": cfg.ct.views, "arc_degrees": cfg.ct.arc_degrees, "I0": cfg.ct.I0, "geometry": "parallel",
            "simulated": True}
    return _slice_range(n, cfg.slices, path), simulated, info, n


def _ct_slice(build: Callable[[int], CTProblem], i: int) -> tuple[CTProblem, np.ndarray]:
    """Slice `i`'s problem and its FBP in HU."""
    problem = build(i)
    if not bool(torch.isfinite(problem.y).all()):
        raise SliceError("the sinogram holds non-finite values")
    return problem, problem.to_hu(run_method("fbp", problem, MethodSettings()).mean).cpu().numpy()


def run_ct_file(path: Path, cfg: ReconstructConfig, settings: MethodSettings) -> VolumeResult:
    from tqdm.auto import tqdm

    slices, build, info, n_file = _ct_source(path, cfg)
    methods = {m: MethodVolume() for m in cfg.solvers}
    result = VolumeResult(path.stem, "ct", [], None, ("fbp", np.zeros(0)), methods, {}, info, n_slices_file=n_file)
    refs, fbps, sinos = [], [], []
    for i in tqdm(slices, desc=path.stem, disable=cfg.quiet, leave=False):
        built = _attempt(result, i, path, lambda: _ct_slice(build, i))
        if built is None:
            continue
        problem, fbp = built
        result.slices.append(i)
        fbps.append(fbp)
        refs.append(None if problem.reference_hu is None else problem.reference_hu.cpu().numpy())
        sinos.append(problem.y.cpu().numpy())
        _run_methods(i, problem, cfg, settings, methods, problem.to_hu)
    _finish(result, path)
    result.reference = np.stack(refs) if all(r is not None for r in refs) else None
    result.initial = ("fbp", np.stack(fbps))
    result.extra = {"sinogram": np.stack(sinos)}
    return result


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
               "prior": cfg.prior_name, "seed": cfg.mask.seed, "units": "HU" if result.modality == "ct" else "magnitude",
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
             "prior": cfg.prior_name, "nfe": summary["solvers"].get(primary, {}).get("nfe", 0), "seed": cfg.mask.seed,
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
    width = None
    if shown_primary in result.intervals:
        lower, upper, _ = result.intervals[shown_primary]
        width = upper[row[shown_primary]] - lower[row[shown_primary]]
    write_panel(path, ref, first, show, std, shown_primary or "", title, first_name=init_name.replace("_", "-"),
                interval_width=width)


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


def add_intervals(result: VolumeResult, table: Any, alpha: float = 0.05) -> None:
    """95% intervals (`recon.intervals`) for every method with a std, calibrated by the prior's table."""
    from recon import intervals

    for m, r in result.methods.items():
        if not (r.means and r.stds):
            continue
        mean, std = np.stack(r.means), np.stack(r.stds)
        rel = float(np.median(intervals.relative_std(mean, std)))
        lam, record = intervals.choose_lambda(table, m, result.modality, result.info.get("acceleration"), alpha, rel)
        lower, upper = intervals.interval(mean, std, lam, magnitude=result.modality == "mri")
        record["relative_std"] = rel
        if result.reference is not None:
            ref = result.reference[result.rows(r.slices)]
            record["coverage_95"] = intervals.coverage(mean, std, ref, lam)
        record["mean_interval_width"] = float((upper - lower)[intervals.object_mask(mean)].mean())
        result.intervals[m] = (lower, upper, record)


def reconstruct_file(path: Path, cfg: ReconstructConfig, settings_for: Callable[[str], MethodSettings],
                     out_dir: Path, modality: str | None = None) -> dict[str, Any]:
    """Reconstruct one input (modality detected from its content unless given) and write its outputs.

    Returns the summary; its "status" is "partial" when some slice or method failed (the rest is written).
    Raises for a file that yields nothing (every slice failed, unreadable input).
    """
    modality = modality or detect_modality(path)
    settings = settings_for(modality)
    result = run_mri_file(path, cfg, settings) if modality == "mri" else run_ct_file(path, cfg, settings)
    add_intervals(result, settings.intervals)
    summary = summarise(path, cfg, result)
    write_outputs(out_dir, cfg, summary, result)
    return summary


def report_error(path: Path | str, err: Exception | str) -> None:
    """One clear line on stderr naming the file and the problem."""
    msg = err if isinstance(err, str) else describe_error(err)
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
