"""`recon reconstruct`: fastMRI files -> posterior mean, uncertainty, baselines, metrics and figures."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import metrics
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
        mask: retrospective undersampling for fully sampled inputs.
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


@dataclass
class _MethodVolume:
    means: list[np.ndarray] = field(default_factory=list)
    stds: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    wall: float = 0.0
    network: float = 0.0
    nfe: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)


def _magnitude(problem: MRIProblem, img: torch.Tensor) -> torch.Tensor:
    if img.is_complex():
        return problem.magnitude(img)
    return center_crop(img.abs(), problem.crop)


def _collect(vol: _MethodVolume, problem: MRIProblem, post: Posterior, keep_samples: bool) -> None:
    vol.means.append(_magnitude(problem, post.mean).cpu().numpy())
    if post.samples is not None and post.samples.shape[0] > 1:
        mags = _magnitude(problem, post.samples)
        vol.stds.append(mags.std(0).cpu().numpy())
        if keep_samples:
            vol.samples.append(mags.cpu().numpy())
    vol.wall += post.wall_time
    vol.network += post.network_time
    vol.nfe = post.nfe
    vol.hparams = post.hparams


def _slice_range(n: int, slices: tuple[int | None, int | None] | None, path: Path) -> range:
    r = range(n)[slice(*slices)] if slices else range(n)
    if len(r) == 0:
        raise FastMRIFormatError(f"{path}: slice range {slices} selects none of its {n} slices")
    return r


def reconstruct_mri_file(path: Path, cfg: ReconstructConfig, settings: MethodSettings, out_dir: Path) -> dict[str, Any]:
    """Reconstruct one fastMRI file and write NAME.h5, NAME.png, NAME.json into `out_dir`. Returns the JSON summary."""
    from tqdm.auto import tqdm

    name = path.stem
    with load_fastmri(path) as vol:
        if not vol.multicoil:
            raise FastMRIFormatError(f"{path}: single-coil files are not supported by `reconstruct` (multi-coil needed)")
        slices = _slice_range(vol.n_slices, cfg.slices, path)
        results = {m: _MethodVolume() for m in cfg.solvers}
        refs, zfs, masks, maps = [], [], [], []
        accel, kind, retro = 1.0, "", False
        for i in tqdm(slices, desc=name, disable=cfg.quiet, leave=False):
            target = vol.target[i] if vol.target is not None else None
            problem = prepare_mri_slice(vol.kspace[i], vol.header, cfg.mask, target=target, device=cfg.device,
                                        n_maps=cfg.n_maps)
            accel, kind, retro = problem.acceleration, problem.mask_kind, problem.retrospective
            zfs.append(problem.zero_filled().cpu().numpy())
            if problem.reference is not None:
                refs.append(problem.reference.cpu().numpy())
            masks.append(problem.mask.cpu().numpy())
            if cfg.save_maps:
                maps.append(problem.maps.cpu().numpy())
            for m in cfg.solvers:
                post = run_method(m, problem, settings)
                _collect(results[m], problem, post, cfg.save_samples)
    reference = np.stack(refs) if len(refs) == len(slices) else None
    zero_filled = np.stack(zfs)
    summary = _summarise(path, cfg, slices, accel, kind, retro, reference, zero_filled, results)
    _write_outputs(out_dir, name, cfg, summary, reference, zero_filled, np.stack(masks),
                   np.stack(maps) if maps else None, results)
    return summary


def _summarise(path, cfg, slices, accel, kind, retro, reference, zero_filled, results) -> dict[str, Any]:
    def scores(img: np.ndarray) -> dict[str, float | None]:
        if reference is None:
            return {"psnr": None, "ssim": None, "nmse": None}
        return metrics.all_metrics(reference, img)

    solvers_out: dict[str, Any] = {"zero-filled": {**scores(zero_filled), "wall_time_s": 0.0, "nfe": 0, "mean_std": None}}
    for m, r in results.items():
        solvers_out[m] = {
            **scores(np.stack(r.means)),
            "wall_time_s": round(r.wall, 3),
            "network_time_s": round(r.network, 3),
            "nfe": r.nfe,
            "mean_std": float(np.mean(r.stds)) if r.stds else None,
        }
    return {
        "file": str(path),
        "slices": list(slices),
        "acceleration": round(float(accel), 3),
        "mask": kind,
        "retrospective": retro,
        "prior": cfg.prior_name,
        "seed": cfg.mask.seed,
        "solvers": solvers_out,
        "hparams": {m: r.hparams for m, r in results.items()},
        "software_version": VERSION,
    }


def _write_outputs(out_dir: Path, name: str, cfg: ReconstructConfig, summary: dict[str, Any],
                   reference: np.ndarray | None, zero_filled: np.ndarray, masks: np.ndarray,
                   maps: np.ndarray | None, results: dict[str, _MethodVolume]) -> None:
    paths = output_paths(out_dir, name)
    primary = next((m for m in cfg.solvers if m in POSTERIOR_METHODS), cfg.solvers[0])
    means = {m: np.stack(r.means) for m, r in results.items()}
    stds = {m: np.stack(r.stds) for m, r in results.items() if r.stds}
    groups = {f"solvers/{m}": {"mean": means[m], "std": stds.get(m),
                               "samples": np.stack(r.samples, 1) if r.samples else None} for m, r in results.items()}
    datasets = {"mean": means[primary], "std": stds.get(primary), "zero_filled": zero_filled,
                "reference": reference, "mask": masks, "coil_maps": maps,
                "samples": groups[f"solvers/{primary}"]["samples"]}
    attrs = {"solver": primary, "solvers": ",".join(cfg.solvers), "prior": cfg.prior_name,
             "nfe": summary["solvers"][primary]["nfe"], "seed": cfg.mask.seed,
             "acceleration": summary["acceleration"], "mask_kind": summary["mask"],
             "software_version": VERSION, "source_file": summary["file"]}
    write_result_h5(paths["h5"], datasets, groups, attrs)
    mid = len(zero_filled) // 2
    title = f"{name}  slice {summary['slices'][mid]}  R={summary['acceleration']:.1f} ({summary['mask']})"
    write_panel(paths["png"], None if reference is None else reference[mid], zero_filled[mid],
                {m: v[mid] for m, v in means.items()}, stds[primary][mid] if primary in stds else None,
                primary if primary in stds or reference is not None else None, title)
    if "nifti" in cfg.export:
        export_nifti(out_dir / f"{name}_mean.nii.gz", means[primary])
        if primary in stds:
            export_nifti(out_dir / f"{name}_std.nii.gz", stds[primary])
    if "dicom" in cfg.export:
        export_dicom(out_dir / f"{name}_mean_dicom", means[primary], f"{primary} posterior mean")
        if primary in stds:
            export_dicom(out_dir / f"{name}_std_dicom", stds[primary], f"{primary} posterior std")
    write_json(paths["json"], summary)


def report_error(path: Path | str, err: Exception) -> None:
    """One clear line on stderr naming the file and the problem."""
    msg = str(err)
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    print(f"error: {msg}", file=sys.stderr)


