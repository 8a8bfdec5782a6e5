"""`recon reconstruct INPUT... --out DIR`: reconstruct fastMRI files (and CT volumes / sinograms) with
diffusion solvers and baselines."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from recon.distributed import finish, init_from_env, total
from recon.io import iter_h5_files
from recon.methods import POSTERIOR_METHODS, MethodError, MethodSettings, check_methods
from recon.ct_problem import CTSpec
from recon.problem import MaskSpec

DEFAULT_PRIOR = {"mri": "brain-mri-complex", "ct": "head-ct"}
DEFAULT_UNET = {"mri": "unet-brain-mri", "ct": "unet-head-ct"}


class UsageError(ValueError):
    """A command-line setting that cannot work, found before any file is touched."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="fastMRI .h5 files, CT volumes / sinogram files, or directories of them")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--solver", default="dds", help="comma-separated: " + ",".join(
        ["dds", "projection", "score-ald", "dps", "ccdf", "unet", "sense", "l1-wavelet", "tv", "zero-filled",
         "fbp", "sirt"]))
    p.add_argument("--modality", choices=["auto", "mri", "ct"], default="auto",
                   help="detected from each file's content by default")
    p.add_argument("--prior", default=None, help="bundled prior name or checkpoint path "
                   "(default: brain-mri-complex for MRI, head-ct for CT)")
    p.add_argument("--prior-family", choices=["ncsnpp", "adm"], default=None,
                   help="load --prior as a published checkpoint of this network family")
    p.add_argument("--prior-config", default=None, help="named config for --prior-family (default: inferred)")
    p.add_argument("--unet", default=None, help="U-Net baseline name or path (default: unet-brain-mri / unet-head-ct)")
    p.add_argument("--mask", default="random", help="mask kind for fully sampled inputs (random, equispaced, "
                   "gaussian1d, gaussian2d, poisson, uniform2d)")
    p.add_argument("--accel", type=float, default=4.0, help="acceleration for fully sampled inputs")
    p.add_argument("--center-fraction", type=float, default=None, help="default 0.08 (R<=4) or 0.04")
    p.add_argument("--views", type=int, default=60, help="CT: projection views simulated from HU volumes")
    p.add_argument("--arc", type=float, default=180.0, help="CT: angular range in degrees (< 180: limited angle)")
    p.add_argument("--I0", type=float, default=None, help="CT: incident photons per bin (Poisson noise)")
    p.add_argument("--maps", type=int, default=1, help="ESPIRiT map sets (2 for reduced FOV with wrap-around)")
    p.add_argument("--samples", type=int, default=8, help="posterior samples per slice")
    p.add_argument("--nfe", type=int, default=None, help="network evaluations (default: each solver's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slices", default=None, help="slice range A:B (Python semantics)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--export", default="", help="comma-separated: nifti,dicom")
    p.add_argument("--save-samples", action="store_true")
    p.add_argument("--save-maps", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="recompute files whose outputs are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_slices(text: str | None) -> tuple[int | None, int | None] | None:
    if not text:
        return None
    try:
        a, b = text.split(":")
        return (int(a) if a else None, int(b) if b else None)
    except ValueError:
        raise UsageError(f"--slices must look like A:B, got '{text}'") from None


def build_config(args: argparse.Namespace):
    from recon.pipeline import ReconstructConfig

    try:
        methods = check_methods(args.solver.split(","), args.modality)
    except MethodError as e:
        raise UsageError(str(e)) from None
    if args.views < 1:
        raise UsageError(f"--views must be >= 1, got {args.views}")
    if not args.accel > 1:
        raise UsageError(f"--accel must be > 1, got {args.accel}")
    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    exports = tuple(e for e in args.export.split(",") if e)
    bad = [e for e in exports if e not in ("nifti", "dicom")]
    if bad:
        raise UsageError(f"--export: unknown format(s) {bad}; choose nifti, dicom")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    cf = args.center_fraction if args.center_fraction is not None else (0.08 if args.accel <= 4 else 0.04)
    return ReconstructConfig(
        solvers=methods, mask=MaskSpec(args.mask, args.accel, cf, args.seed),
        ct=CTSpec(args.views, args.arc, args.I0, args.seed), slices=parse_slices(args.slices),
        device=args.device, n_maps=args.maps, save_samples=args.save_samples, save_maps=args.save_maps,
        export=exports, quiet=args.quiet, prior_name=args.prior or "")


def load_prior(name: str, family: str | None, config: str | None, device: str):
    """A registry name or our checkpoint, or a published checkpoint with `family` (ncsnpp, adm)."""
    if family:
        from priors.checkpoints import load_checkpoint
        return load_checkpoint(name, family=family, config=config, device=device)
    from priors.registry import load
    return load(name, device=device)


class SettingsCache:
    """Method settings per modality, loading each prior / U-Net once, on first use."""

    def __init__(self, args: argparse.Namespace, cfg):
        self.args, self.cfg = args, cfg
        self._cache: dict[str, MethodSettings] = {}

    def __call__(self, modality: str) -> MethodSettings:
        if modality not in self._cache:
            self._cache[modality] = self._load(modality)
        return self._cache[modality]

    def _load(self, modality: str) -> MethodSettings:
        a, cfg = self.args, self.cfg
        if a.modality != "auto" and modality != a.modality:
            raise UsageError(f"--modality {a.modality} given, but this input holds {modality} data")
        try:
            check_methods(cfg.solvers, modality)
        except MethodError as e:
            raise UsageError(str(e)) from None
        prior = None
        if any(m in POSTERIOR_METHODS for m in cfg.solvers):
            try:
                prior = load_prior(a.prior or DEFAULT_PRIOR[modality], a.prior_family, a.prior_config, cfg.device)
            except (KeyError, ValueError, OSError) as e:
                raise UsageError(str(e).strip("'\"")) from None
            want = "complex" if modality == "mri" else "real"
            if prior.info.value_kind != want:
                raise UsageError(f"prior '{prior.info.name}' is {prior.info.value_kind}-valued; "
                                 f"{modality.upper()} data need a {want}-valued prior")
        unet = None
        if "unet" in cfg.solvers:
            from recon.baselines.unet import load_unet
            try:
                unet = load_unet(a.unet or DEFAULT_UNET[modality], device=cfg.device)
            except (KeyError, ValueError, OSError) as e:
                raise UsageError(str(e).strip("'\"")) from None
        return MethodSettings(prior=prior, n_samples=a.samples, nfe=a.nfe, seed=a.seed, unet=unet,
                              progress=not a.quiet)


def run(args: argparse.Namespace) -> int:
    from recon.pipeline import is_complete, reconstruct_file, report_error

    try:
        cfg = build_config(args)
        rank = init_from_env(cfg.device)
        cfg.device = rank.device(cfg.device)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings_for = SettingsCache(args, cfg)
    failed = 0
    files: list[Path] = []
    for item in args.inputs:
        if Path(item).exists():
            files.extend(iter_h5_files([item]))
        elif rank.rank == 0:  # every rank sees the same inputs; one reports
            report_error(item, FileNotFoundError("no such file or directory"))
            failed += 1
    for path in rank.shard(files):
        if not args.overwrite and is_complete(args.out, path.stem):
            if not args.quiet:
                print(f"skip (complete): {path}", flush=True)
            continue
        try:
            summary = reconstruct_file(path, cfg, settings_for, args.out)
        except UsageError as e:  # a setting that fits no input of this kind: stop here
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (ValueError, OSError, RuntimeError) as e:
            report_error(path, e)
            failed += 1
            continue
        if not args.quiet:
            _print_summary(summary, args.out / f"{path.stem}.json")
    failed = total(rank, failed)
    finish(rank)
    return 1 if failed else 0


def _print_summary(summary: dict, json_path: Path) -> None:
    """A few lines per file, written at once (ranks of a torchrun share the terminal)."""
    setting = (f"R={summary['acceleration']:.2f} ({summary['mask']})" if summary["modality"] == "mri"
               else f"{summary['views']} views")
    lines = [f"{summary['file']}: {setting}  -> {json_path}"]
    for name, s in summary["solvers"].items():
        psnr = "   n/a" if s["psnr"] is None else f"{s['psnr']:6.2f}"
        ssim = "  n/a" if s["ssim"] is None else f"{s['ssim']:.3f}"
        std = "" if s["mean_std"] is None else f"  mean std {s['mean_std']:.4g}"
        lines.append(f"  {name:12s} PSNR {psnr} dB  SSIM {ssim}  {s['wall_time_s']:7.1f} s  NFE {s['nfe']}{std}")
    lines.append(f"  figure: {json_path.with_suffix('.png')}  data: {json_path.with_suffix('.h5')}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
