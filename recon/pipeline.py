"""`recon reconstruct`: fastMRI files (and CT volumes / sinograms) -> posterior mean, uncertainty,
baselines, metrics and figures, one set of outputs per input file."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from recon import metrics
from recon.ct_problem import HU_RANGE, CTProblem, CTSpec, metric_image, simulated_ct_problem
from recon.io import FastMRIFormatError, center_crop, load_fastmri
from recon.methods import POSTERIOR_METHODS, MethodSettings, run_method
from recon.outputs import export_dicom, export_nifti, write_json, write_panel, write_result_h5
from recon.problem import MaskSpec, MRIProblem, prepare_mri_slice
from solvers.posterior import Posterior

VERSION = "0.1.0"


@dataclass
class ReconstructConfig:
    """Settings that apply to every input file.

    Attributes:
        solvers: method names in order; the first posterior method fills the top-level ``mean``/``std``.
        mask: retrospective undersampling for fully sampled MRI inputs.
        ct: simulated CT acquisition for HU-volume inputs.
        slices: (start, stop) slice range, Python semantics; None = all.
        device: torch device.
        n_maps: ESPIRiT map sets (2 for reduced fields of view with wrap-around).
        save_samples, save_maps: also store the posterior samples / coil maps.
        export: subset of {"nifti", "dicom"}.
        quiet: no progress bars.
        prior_name: recorded in the outputs.
    """

    solvers: list[str]
    mask: MaskSpec = field(default_factory=MaskSpec)
    ct: CTSpec = field(default_factory=CTSpec)
    slices: tuple[int | None, int | None] | None = None
    device: str = "cpu"
    n_maps: int = 1
    save_samples: bool = False
    save_maps: bool = False
    export: tuple[str, ...] = ()
    quiet: bool = False
    prior_name: str = ""


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    return {"h5": out_dir / f"{name}.h5", "png": out_dir / f"{name}.png", "json": out_dir / f"{name}.json"}


def is_complete(out_dir: Path, name: str) -> bool:
    """True when all three outputs exist (NAME.json is written last)."""
    return all(p.exists() for p in output_paths(out_dir, name).values())


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


# ---------------------------------------------------------------------------
# per-method volumes
# ---------------------------------------------------------------------------
@dataclass
class MethodVolume:
    """A method's per-slice outputs in display units (MRI magnitude, CT HU) and its costs."""

    means: list[np.ndarray] = field(default_factory=list)
    stds: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    wall: float = 0.0
    network: float = 0.0
    nfe: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)

    def add(self, post: Posterior, display: Callable[[torch.Tensor], torch.Tensor], keep_samples: bool) -> None:
        self.means.append(display(post.mean).cpu().numpy())
        if post.samples is not None and post.samples.shape[0] > 1:
            shown = display(post.samples)
            self.stds.append(shown.std(0).cpu().numpy())
            if keep_samples:
                self.samples.append(shown.cpu().numpy())
        self.wall += post.wall_time
        self.network += post.network_time
        self.nfe = post.nfe
        self.hparams = post.hparams


@dataclass
class VolumeResult:
    """Everything written for one input file."""

    name: str
    modality: str
    slices: list[int]
    reference: np.ndarray | None
    initial: tuple[str, np.ndarray]                 # ("zero_filled", ...) for MRI, ("fbp", ...) for CT
    methods: dict[str, MethodVolume]
    extra: dict[str, np.ndarray | None]              # mask / coil maps / sinogram
    info: dict[str, Any]                             # acceleration, mask kind, views, ...


def _slice_range(n: int, slices: tuple[int | None, int | None] | None, path: Path) -> list[int]:
    r = list(range(n)[slice(*slices)]) if slices else list(range(n))
    if not r:
        raise FastMRIFormatError(f"{path}: slice range {slices} selects none of its {n} slices")
    return r


# ---------------------------------------------------------------------------
# MRI
# ---------------------------------------------------------------------------
def _mri_display(problem: MRIProblem) -> Callable[[torch.Tensor], torch.Tensor]:
    def show(img: torch.Tensor) -> torch.Tensor:
        return problem.magnitude(img) if img.is_complex() else center_crop(img.abs(), problem.crop)
    return show


def run_mri_file(path: Path, cfg: ReconstructConfig, settings: MethodSettings) -> VolumeResult:
    from tqdm.auto import tqdm

    with load_fastmri(path) as vol:
        if not vol.multicoil:
            raise FastMRIFormatError(f"{path}: single-coil files are not supported by `reconstruct` (multi-coil needed)")
        slices = _slice_range(vol.n_slices, cfg.slices, path)
        methods = {m: MethodVolume() for m in cfg.solvers}
        refs, zfs, masks, maps = [], [], [], []
        problem = None
        for i in tqdm(slices, desc=path.stem, disable=cfg.quiet, leave=False):
            target = vol.target[i] if vol.target is not None else None
            problem = prepare_mri_slice(vol.kspace[i], vol.header, cfg.mask, target=target, device=cfg.device,
                                        n_maps=cfg.n_maps)
            zfs.append(problem.zero_filled().cpu().numpy())
            if problem.reference is not None:
                refs.append(problem.reference.cpu().numpy())
            masks.append(problem.mask.cpu().numpy())
            if cfg.save_maps:
                maps.append(problem.maps.cpu().numpy())
            for m in cfg.solvers:
                methods[m].add(run_method(m, problem, settings), _mri_display(problem), cfg.save_samples)
    assert problem is not None
    info = {"acceleration": round(problem.acceleration, 3), "mask": problem.mask_kind,
            "retrospective": problem.retrospective}
    return VolumeResult(path.stem, "mri", slices, np.stack(refs) if len(refs) == len(slices) else None,
                        ("zero_filled", np.stack(zfs)), methods,
                        {"mask": np.stack(masks), "coil_maps": np.stack(maps) if maps else None}, info)


# ---------------------------------------------------------------------------
# CT
# ---------------------------------------------------------------------------
def _ct_problems(path: Path, cfg: ReconstructConfig) -> tuple[list[int], list[CTProblem], dict[str, Any]]:
    from recon.ct_data import read_ct_volume, read_sinogram

    with h5py.File(path, "r") if path.is_file() else _nullcontext() as f:
        is_sinogram = f is not None and "sinogram" in f
    if is_sinogram:
        sino = read_sinogram(path)
        slices = _slice_range(sino.data.shape[0], cfg.slices, path)
        op = sino.geometry.operator()
        mu_w = sino.mu_water_per_mm or CTProblem.mu_water
        probs = [CTProblem(torch.from_numpy(sino.data[i]).to(cfg.device), op, sino.geometry.pixel_size_mm,
                           None, mu_w) for i in slices]
        return slices, probs, {"views": len(sino.geometry.angles), "geometry": sino.geometry.kind, "simulated": False}
    vol = read_ct_volume(path)
    slices = _slice_range(vol.hu.shape[0], cfg.slices, path)
    probs = [simulated_ct_problem(vol.hu[i], vol.spacing_mm_xyz[0], cfg.ct, cfg.device) for i in slices]
    return slices, probs, {"views": cfg.ct.views, "arc_degrees": cfg.ct.arc_degrees, "I0": cfg.ct.I0,
                           "geometry": "parallel", "simulated": True}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def run_ct_file(path: Path, cfg: ReconstructConfig, settings: MethodSettings) -> VolumeResult:
    from tqdm.auto import tqdm

    slices, problems, info = _ct_problems(path, cfg)
    methods = {m: MethodVolume() for m in cfg.solvers}
    refs, fbps, sinos = [], [], []
    settings_fbp = MethodSettings()
    for problem in tqdm(problems, desc=path.stem, disable=cfg.quiet, leave=False):
        fbps.append(problem.to_hu(run_method("fbp", problem, settings_fbp).mean).cpu().numpy())
        if problem.reference_hu is not None:
            refs.append(problem.reference_hu.cpu().numpy())
        sinos.append(problem.y.cpu().numpy())
        for m in cfg.solvers:
            methods[m].add(run_method(m, problem, settings), problem.to_hu, cfg.save_samples)
    return VolumeResult(path.stem, "ct", slices, np.stack(refs) if len(refs) == len(slices) else None,
                        ("fbp", np.stack(fbps)), methods, {"sinogram": np.stack(sinos)}, info)


# ---------------------------------------------------------------------------
# summary and outputs
# ---------------------------------------------------------------------------
def _scores(result: VolumeResult, img: np.ndarray) -> dict[str, float | None]:
    if result.reference is None:
        return {"psnr": None, "ssim": None, "nmse": None}
    if result.modality == "ct":  # HU clipped to [-1024, 2000], data range 3024
        ref, pred = metric_image(result.reference), metric_image(img)
        return {"psnr": metrics.psnr(ref, pred, HU_RANGE), "ssim": metrics.ssim(ref, pred, HU_RANGE),
                "nmse": metrics.nmse(ref, pred)}
    return metrics.all_metrics(result.reference, img)


def summarise(path: Path, cfg: ReconstructConfig, result: VolumeResult) -> dict[str, Any]:
    """The NAME.json content."""
    init_name, init = result.initial
    solvers_out: dict[str, Any] = {init_name.replace("_", "-"): {**_scores(result, init), "wall_time_s": 0.0,
                                                                   "nfe": 0, "mean_std": None}}
    for m, r in result.methods.items():
        solvers_out[m] = {**_scores(result, np.stack(r.means)), "wall_time_s": round(r.wall, 3),
                          "network_time_s": round(r.network, 3), "nfe": r.nfe,
                          "mean_std": float(np.mean(r.stds)) if r.stds else None}
    return {"file": str(path), "modality": result.modality, "slices": result.slices,
            "acceleration": result.info.get("acceleration"), "mask": result.info.get("mask"),
            **{k: v for k, v in result.info.items() if k not in ("acceleration", "mask")},
            "prior": cfg.prior_name, "seed": cfg.mask.seed, "units": "HU" if result.modality == "ct" else "magnitude",
            "solvers": solvers_out, "hparams": {m: r.hparams for m, r in result.methods.items()},
            "software_version": VERSION}


def write_outputs(out_dir: Path, cfg: ReconstructConfig, summary: dict[str, Any], result: VolumeResult) -> None:
    """NAME.h5, NAME.png, exports, and NAME.json last."""
    paths = output_paths(out_dir, result.name)
    primary = next((m for m in cfg.solvers if m in POSTERIOR_METHODS), cfg.solvers[0])
    means = {m: np.stack(r.means) for m, r in result.methods.items()}
    stds = {m: np.stack(r.stds) for m, r in result.methods.items() if r.stds}
    samples = {m: np.stack(r.samples) for m, r in result.methods.items() if r.samples}  # [slices, N, H, W]
    groups = {f"solvers/{m}": {"mean": means[m], "std": stds.get(m), "samples": samples.get(m)} for m in means}
    init_name, init = result.initial
    datasets = {"mean": means[primary], "std": stds.get(primary), "samples": samples.get(primary),
                init_name: init, "reference": result.reference, **result.extra}
    attrs = {"solver": primary, "solvers": ",".join(cfg.solvers), "prior": cfg.prior_name,
             "nfe": summary["solvers"][primary]["nfe"], "seed": cfg.mask.seed, "modality": result.modality,
             "units": summary["units"], "software_version": VERSION, "source_file": summary["file"],
             **{("mask_kind" if k == "mask" else k): ("" if v is None else v) for k, v in result.info.items()}}
    write_result_h5(paths["h5"], datasets, groups, attrs)
    mid = len(init) // 2
    if result.modality == "ct":
        show = {k: metric_image(v[mid]) for k, v in means.items()}
        ref = None if result.reference is None else metric_image(result.reference[mid])
        first = metric_image(init[mid])
        title = f"{result.name}  slice {result.slices[mid]}  {result.info.get('views')} views  (HU + 1024)"
    else:
        show = {k: v[mid] for k, v in means.items()}
        ref = None if result.reference is None else result.reference[mid]
        first = init[mid]
        title = (f"{result.name}  slice {result.slices[mid]}  R={result.info['acceleration']:.1f} "
                 f"({result.info['mask']})")
    write_panel(paths["png"], ref, first, show, stds[primary][mid] if primary in stds else None,
                primary, title, first_name=init_name.replace("_", "-"))
    modality = "CT" if result.modality == "ct" else "MR"
    if "nifti" in cfg.export:
        export_nifti(out_dir / f"{result.name}_mean.nii.gz", means[primary])
        if primary in stds:
            export_nifti(out_dir / f"{result.name}_std.nii.gz", stds[primary])
    if "dicom" in cfg.export:
        offset = 1024.0 if result.modality == "ct" else 0.0
        export_dicom(out_dir / f"{result.name}_mean_dicom", means[primary] + offset, f"{primary} posterior mean",
                     modality, intercept=-offset)
        if primary in stds:
            export_dicom(out_dir / f"{result.name}_std_dicom", stds[primary], f"{primary} posterior std", modality)
    write_json(paths["json"], summary)


def reconstruct_file(path: Path, cfg: ReconstructConfig, settings_for: Callable[[str], MethodSettings],
                     out_dir: Path) -> dict[str, Any]:
    """Reconstruct one input (modality detected from its content) and write its outputs. Returns the summary."""
    modality = detect_modality(path)
    settings = settings_for(modality)
    result = run_mri_file(path, cfg, settings) if modality == "mri" else run_ct_file(path, cfg, settings)
    summary = summarise(path, cfg, result)
    write_outputs(out_dir, cfg, summary, result)
    return summary


def report_error(path: Path | str, err: Exception) -> None:
    """One clear line on stderr naming the file and the problem."""
    msg = str(err)
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"error: {msg}", file=sys.stderr)
