"""`recon reconstruct`: fastMRI files (and CT volumes / sinograms) -> posterior mean, uncertainty,
baselines, metrics and figures, one set of outputs per input file."""
from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from operators.fft import ifft2c, rss
from recon.data.io import FastMRIFormatError, center_crop, load_fastmri
from recon.methods import MethodConfig, prior_fit, run_method
from recon.pipeline.results import add_intervals, summarise, write_outputs
from recon.pipeline.volume import MethodVolume, ReconstructConfig, SliceError, VolumeResult
from recon.problems.ct import CTProblem, simulated_ct_problem
from recon.problems.mri import MRIProblem, noise_floor, prepare_mri_slice
from recon.problems.noise import NoiseEstimationWarning, rescale_record


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


def _slice_range(n: int, slices: tuple[int | None, int | None] | None, path: Path) -> list[int]:
    r = list(range(n)[slice(*slices)]) if slices else list(range(n))
    if not r:
        raise FastMRIFormatError(f"{path}: slice range {slices} selects none of its {n} slices")
    return r


def _run_methods(index: int, problem: MRIProblem | CTProblem, cfg: ReconstructConfig, settings: MethodConfig,
                 methods: dict[str, MethodVolume], display: Callable[[torch.Tensor], torch.Tensor],
                 estimate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Every method on one slice; a method's failure is recorded against it and the others go on."""
    for m in cfg.solvers:
        try:
            post = run_method(m, problem, settings)
            methods[m].add(index, post, display, cfg.save_samples, estimate, prior_fit(post, settings))
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


def _mri_display(problem: MRIProblem, scale: float,
                 magnitude: str = "image") -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in file units on the recon grid: complex image estimates as |x| ("image") or as the fastMRI
    target they predict ("rss": `MRIProblem.rss_estimate`); real images (U-Net) as they are."""
    to_magnitude = problem.rss_estimate if magnitude == "rss" else problem.magnitude

    def show(img: torch.Tensor) -> torch.Tensor:
        mag = to_magnitude(img) if img.is_complex() else center_crop(img.abs(), problem.crop)
        return mag.double() * scale
    return show


def _prepare_mri(vol, i: int, cfg: ReconstructConfig) -> tuple[MRIProblem, float]:
    """Slice `i` as a problem in unit intensity scale, and the factor back to file units."""
    kspace = vol.kspace[i] if vol.multicoil else vol.kspace[i][None]   # single-coil [H, W]: one coil
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


def run_mri_file(path: Path, cfg: ReconstructConfig, settings: MethodConfig) -> VolumeResult:
    from tqdm.auto import tqdm

    with load_fastmri(path) as vol:
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
            _run_methods(i, problem, cfg, settings, methods, _mri_display(problem, scale),
                         _mri_display(problem, scale, cfg.magnitude))
    _finish(result, path)
    assert problem is not None
    result.reference = np.stack(refs) if all(r is not None for r in refs) else None
    result.initial = ("zero_filled", np.stack(zfs))
    result.extra = {"mask": np.stack(masks), "coil_maps": np.stack(maps) if maps else None}
    noise_std = float(np.median([n["noise_std"] for n in noise]))
    floor = noise_floor(noise_std, problem.y.shape[-3]) if cfg.magnitude == "rss" else 0.0
    result.info = {"acceleration": round(problem.acceleration, 3), "mask": problem.mask_kind,
                   "sampling": problem.sampling, "retrospective": problem.retrospective, "coils": problem.y.shape[-3],
                   "mask_request": dataclasses.asdict(cfg.mask) if problem.retrospective else None,
                   "magnitude": {"rule": cfg.magnitude, "noise_floor": floor}, "noise_std": noise_std,
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
    return problem, problem.to_hu(run_method("fbp", problem, MethodConfig()).mean).cpu().numpy()


def run_ct_file(path: Path, cfg: ReconstructConfig, settings: MethodConfig) -> VolumeResult:
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


def reconstruct_file(path: Path, cfg: ReconstructConfig, settings_for: Callable[[str], MethodConfig],
                     out_dir: Path, modality: str | None = None) -> dict[str, Any]:
    """Reconstruct one input (modality detected from its content unless given) and write its outputs.

    Returns the summary; its "status" is "partial" when some slice or method failed (the rest is written).
    Raises for a file that yields nothing (every slice failed, unreadable input).
    """
    modality = modality or detect_modality(path)
    settings = settings_for(modality)
    result = run_mri_file(path, cfg, settings) if modality == "mri" else run_ct_file(path, cfg, settings)
    add_intervals(result, settings.intervals, weights=cfg.weights.get(modality))
    summary = summarise(path, cfg, result)
    write_outputs(out_dir, cfg, summary, result)
    return summary


def report_error(path: Path | str, err: Exception | str) -> None:
    """One clear line on stderr naming the file and the problem."""
    msg = err if isinstance(err, str) else describe_error(err)
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
