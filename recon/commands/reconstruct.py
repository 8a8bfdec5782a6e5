"""`recon reconstruct INPUT... --out DIR`: reconstruct fastMRI files (and CT volumes / sinograms) with
diffusion solvers and baselines."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import signal
import sys
from pathlib import Path
from typing import Callable, TypeVar

from recon.commands import device_error
from recon.pipeline.distributed import finish, init_from_env, total
from recon.intervals import load_table
from recon.data.io import iter_h5_files
from recon.data.masks import SPANS
from recon.pipeline.run import detect_modality, report_error
from recon.methods import POSTERIOR_METHODS, MethodError, MethodConfig, check_methods, uses_unet
from recon.problems.ct import CTSpec
from recon.problems.mri import MaskSpec

_T = TypeVar("_T")  # what an `auto`-or-value flag converts to

DEFAULT_PRIOR = {"mri": "brain-mri-complex", "ct": "head-ct"}
DEFAULT_UNET = {"mri": "unet-brain-mri", "ct": "unet-head-ct"}


class UsageError(ValueError):
    """A command-line setting that cannot work, found before any file is touched."""


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="fastMRI .h5 files, CT volumes / sinogram files, or directories of them")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--solver", default="dds", help="comma-separated: " + ",".join(
        ["dds", "projection", "score-ald", "dps", "ccdf", "unet", "sense", "l1-wavelet", "tv", "zero-filled",
         "fbp", "sirt"]))
    p.add_argument("--primary", default=None, help="the method stored as 'reconstruction'/'mean' and shown with its "
                   "error and std (default: the first of --solver)")
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
    p.add_argument("--mask-span", choices=SPANS, default=SPANS[0],
                   help="on files zero-padded in phase: build the mask over every phase line and zero the "
                        "padding, as fastMRI's mask functions (fastmri), or over the acquired lines only "
                        "(acquired: centre fraction and --accel counted over them)")
    p.add_argument("--center-fraction", type=float, default=None, help="default 0.08 (R<=4) or 0.04")
    p.add_argument("--views", type=int, default=60, help="CT: projection views simulated from HU volumes")
    p.add_argument("--arc", type=float, default=180.0, help="CT: angular range in degrees (< 180: limited angle)")
    p.add_argument("--I0", type=float, default=None, help="CT: incident photons per bin (Poisson noise)")
    p.add_argument("--maps", default="auto", help="ESPIRiT map sets: auto (chosen from the data), 1 or 2 "
                   "(2 for reduced fields of view with wrap-around)")
    p.add_argument("--noise-std", default="auto", help="MRI k-space noise std per real/imag part, in the file's "
                   "units: auto (estimated from the data), a value, or 0 (noiseless)")
    p.add_argument("--magnitude", choices=["rss", "image"], default="rss",
                   help="MRI: what a method's image estimate x is written as: rss, the fastMRI target it "
                        "predicts (the RSS of the fully sampled noisy coil images: sqrt(|x|^2 + b^2), b the "
                        "coils' noise floor; compared with reconstruction_rss), or image (|x|, no floor). "
                        "std, samples and U-Net / zero-filled outputs are the same either way")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.NAME=VALUE", dest="hparams",
                   help="a method's hyper-parameter (a posterior method's field in solvers/, a baseline's keyword "
                        "in recon/baselines/), e.g. dds.eta=0.85 or tv.lam=0.002; repeatable; VALUE is JSON "
                        "(number, true/false, null) or else text. "
                        "Recorded in the JSON's hparams; a calibrated interval fitted with other values is "
                        "flagged uncalibrated")
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


def _auto_or(text: str, flag: str, convert: Callable[[str], _T], expected: str) -> _T | None:
    """``auto`` (any case, spaces around) -> None, else ``convert(text)``; a value it cannot convert is a
    `UsageError` saying that `flag` must be auto or `expected`."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        return convert(text)
    except ValueError:
        raise UsageError(f"{flag} must be auto or {expected}, got '{text}'") from None


def parse_maps(text: str) -> int | None:
    """``auto`` -> None, else a positive integer."""
    n = _auto_or(text, "--maps", int, "a positive integer")
    if n is not None and n < 1:
        raise UsageError(f"--maps must be auto or a positive integer, got {n}")
    return n


def parse_noise_std(text: str) -> float | None:
    """``auto`` -> None, else a finite number >= 0."""
    value = _auto_or(text, "--noise-std", float, "a number >= 0")
    if value is not None and (not math.isfinite(value) or value < 0):
        raise UsageError(f"--noise-std must be auto or a finite number >= 0, got {text}")
    return value


def parse_hparams(items: list[str], methods: list[str]) -> dict[str, dict]:
    """``["dds.eta=0.85", "tv.lam=0.002", ...]`` -> ``{"dds": {"eta": 0.85}, ...}``, each name checked against the
    method's hyper-parameters (a sampler's fields, a baseline's keywords: `recon.baselines.registry.hyper_parameters`)."""
    import solvers
    import recon.baselines  # noqa: F401  (registers the baselines)
    from recon.baselines.registry import hyper_parameters as baseline_hyper_parameters

    out: dict[str, dict] = {}
    for item in items:
        key, eq, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not (eq and dot and method and name):
            raise UsageError(f"--set expects METHOD.NAME=VALUE, got '{item}'")
        method = method.strip().lower().replace("_", "-")
        if method not in methods:
            raise UsageError(f"--set {key}: {method} is not one of --solver {','.join(methods)}")
        fields = (solvers.hyper_parameters(method) if method in POSTERIOR_METHODS
                  else baseline_hyper_parameters(method))
        if not fields:
            raise UsageError(f"--set {key}: {method} has no hyper-parameters")
        if name not in fields:
            raise UsageError(f"--set {key}: {method} has no hyper-parameter '{name}'; valid: {', '.join(sorted(fields))}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        default = fields[name]
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise UsageError(f"--set {key}: expects a finite number (default {default}), got '{text}'")
        if isinstance(default, str) and not isinstance(value, str):
            raise UsageError(f"--set {key}: expects text (default '{default}'), got '{text}'")
        out.setdefault(method, {})[name] = value
    return out


def _check_numbers(args: argparse.Namespace) -> None:
    if args.views < 1:
        raise UsageError(f"--views must be >= 1, got {args.views}")
    if not (math.isfinite(args.accel) and args.accel > 1):
        raise UsageError(f"--accel must be > 1, got {args.accel}")
    if args.center_fraction is not None and not 0 < args.center_fraction < 1:
        raise UsageError(f"--center-fraction must be in (0, 1), got {args.center_fraction}")
    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.nfe is not None and args.nfe < 1:
        raise UsageError(f"--nfe must be >= 1, got {args.nfe}")
    if not 0 < args.arc <= 360:
        raise UsageError(f"--arc must be in (0, 360] degrees, got {args.arc}")
    if args.I0 is not None and not (math.isfinite(args.I0) and args.I0 > 0):
        raise UsageError(f"--I0 must be a positive photon count, got {args.I0}")


def build_config(args: argparse.Namespace):
    from recon.pipeline.volume import ReconstructConfig

    try:
        methods = check_methods(args.solver.split(","), args.modality)
        primary = check_methods([args.primary], args.modality)[0] if args.primary else None
    except MethodError as e:
        raise UsageError(str(e)) from None
    if primary is not None and primary not in methods:
        raise UsageError(f"--primary {args.primary} is not one of --solver {args.solver}")
    _check_numbers(args)
    exports = tuple(e for e in args.export.split(",") if e)
    bad = [e for e in exports if e not in ("nifti", "dicom")]
    if bad:
        raise UsageError(f"--export: unknown format(s) {bad}; choose nifti, dicom")
    if (problem := device_error(args.device)) is not None:
        raise UsageError(problem)
    cf = args.center_fraction if args.center_fraction is not None else (0.08 if args.accel <= 4 else 0.04)
    hparams = parse_hparams(args.hparams, methods)
    cfg = ReconstructConfig(
        solvers=methods, mask=MaskSpec(args.mask, args.accel, cf, args.seed, args.mask_span),
        ct=CTSpec(args.views, args.arc, args.I0, args.seed), slices=parse_slices(args.slices),
        device=args.device, n_maps=parse_maps(args.maps), noise_std=parse_noise_std(args.noise_std),
        magnitude=args.magnitude, primary=primary, save_samples=args.save_samples, save_maps=args.save_maps,
        export=exports, quiet=args.quiet, prior_name=args.prior or "", hparams=hparams,
        weights=weights_record(args, methods, hparams))
    cfg.settings_hash = settings_hash(args, cfg)
    return cfg


def settings_hash(args: argparse.Namespace, cfg) -> str:
    """sha256 (16 hex digits) of every setting that changes what is written for a file."""
    from recon.pipeline.volume import VERSION

    record = {"solvers": cfg.solvers, "primary": cfg.primary, "mask": dataclasses.asdict(cfg.mask),
              "ct": dataclasses.asdict(cfg.ct), "slices": cfg.slices, "n_maps": cfg.n_maps, "noise_std": cfg.noise_std,
              "magnitude": cfg.magnitude,
              "samples": args.samples, "nfe": args.nfe, "prior": args.prior, "prior_family": args.prior_family,
              "prior_config": args.prior_config, "unet": args.unet, "modality": args.modality,
              "save_samples": cfg.save_samples, "save_maps": cfg.save_maps, "export": cfg.export, "version": VERSION,
              "weights": cfg.weights, **({"hparams": cfg.hparams} if cfg.hparams else {})}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_record(args: argparse.Namespace, methods: list[str], hparams: dict[str, dict]) -> dict[str, dict[str, str | None]]:
    """Per modality, the prior and U-Net this run would load (flag or default) with their sha256: the prior only
    when a posterior method runs, the U-Net only when `uses_unet` (so other weights changing redo nothing)."""
    from priors.registry import weights_sha256

    out: dict[str, dict[str, str | None]] = {}
    for modality in ("mri", "ct"):
        rec: dict[str, str | None] = {}
        if any(m in POSTERIOR_METHODS for m in methods):
            rec["prior"] = args.prior or DEFAULT_PRIOR[modality]
            rec["prior_sha256"] = weights_sha256(rec["prior"])
        if uses_unet(methods, hparams):
            rec["unet"] = args.unet or DEFAULT_UNET[modality]
            rec["unet_sha256"] = weights_sha256(rec["unet"])
        out[modality] = rec
    return out


def load_prior(name: str, family: str | None, config: str | None, device: str):
    """A registry name or our checkpoint, or a published checkpoint with `family` (ncsnpp, adm)."""
    if family:
        from priors.checkpoints import load_checkpoint
        return load_checkpoint(name, family=family, config=config, device=device)
    from priors.registry import load
    return load(name, device=device)


def check_fit(args: argparse.Namespace, cfg, modality: str) -> None:
    """Raise MethodError when this file's modality does not fit --modality or the chosen methods."""
    if args.modality != "auto" and modality != args.modality:
        raise MethodError(f"holds {modality.upper()} data, but --modality {args.modality} was given")
    try:
        check_methods(cfg.solvers, modality)
    except MethodError as e:
        raise MethodError(f"holds {modality.upper()} data: {e}") from None


class SettingsCache:
    """Method settings per modality, loading each prior / U-Net once (`preload` before any work)."""

    def __init__(self, args: argparse.Namespace, cfg):
        self.args, self.cfg = args, cfg
        self._cache: dict[str, MethodConfig] = {}

    def __call__(self, modality: str) -> MethodConfig:
        if modality not in self._cache:
            self._cache[modality] = self._load(modality)
        return self._cache[modality]

    def _load(self, modality: str) -> MethodConfig:
        a, cfg = self.args, self.cfg
        prior = table = None
        name = a.prior or DEFAULT_PRIOR[modality]
        if any(m in POSTERIOR_METHODS for m in cfg.solvers):
            try:
                prior = load_prior(name, a.prior_family, a.prior_config, cfg.device)
                table = load_table(name)
            except (KeyError, ValueError, OSError) as e:
                raise UsageError(str(e).strip("'\"")) from None
            want = "complex" if modality == "mri" else "real"
            if prior.info.value_kind != want:
                raise UsageError(f"prior '{prior.info.name}' is {prior.info.value_kind}-valued; "
                                 f"{modality.upper()} data need a {want}-valued prior")
        elif modality == "mri" and "unet" in cfg.solvers:  # the U-Net's interval is calibrated in the prior's table
            try:
                table = load_table(name)
            except (ValueError, OSError) as e:
                raise UsageError(f"interval table of '{name}': {e}") from None
        unet = None
        if uses_unet(cfg.solvers, cfg.hparams):
            from recon.baselines.unet import load_unet
            try:
                unet = load_unet(a.unet or DEFAULT_UNET[modality], device=cfg.device)
            except (KeyError, ValueError, OSError) as e:
                raise UsageError(str(e).strip("'\"")) from None
        return MethodConfig(prior=prior, n_samples=a.samples, nfe=a.nfe, seed=a.seed, unet=unet,
                            progress=not a.quiet, hparams=cfg.hparams, intervals=table)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: temporaries are removed on the way out."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    def handler(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def collect_inputs(items: list[str], rank) -> tuple[list[Path], int]:
    """Files to reconstruct, and how many inputs were missing (reported once, by rank 0)."""
    files: list[Path] = []
    missing = 0
    for item in items:
        p = Path(item)
        if not p.exists():
            if rank.rank == 0:
                report_error(item, "no such file or directory")
            missing += 1
            continue
        found = list(iter_h5_files([p]))
        if p.is_dir() and not found and rank.rank == 0:
            print(f"warning: {p}: no .h5 / .hdf5 files (nor a DICOM series) in this directory", file=sys.stderr)
        files.extend(found)
    return files, missing


def run(args: argparse.Namespace) -> int:
    try:
        with _sigterm_as_interrupt():
            return _run(args)
    except KeyboardInterrupt as e:
        print(f"{'terminated' if isinstance(e, Terminated) else 'interrupted'}: unfinished outputs were removed; "
              "run the same command again to resume (finished files are skipped)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def _run(args: argparse.Namespace) -> int:
    from recon.pipeline.outdir import OutputPathError, check_paths, check_writable

    try:
        cfg = build_config(args)
        rank = init_from_env(cfg.device)
        cfg.device = rank.device(cfg.device)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    files, failed = collect_inputs(args.inputs, rank)
    if not files:
        print("error: no input files to reconstruct", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_paths(files, args.out)
        check_writable(args.out)
    except OutputPathError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    settings_for = SettingsCache(args, cfg)
    todo: list[tuple[Path, str]] = []
    for path in rank.shard(files):
        try:
            modality = detect_modality(path)
            check_fit(args, cfg, modality)
        except Exception as e:  # noqa: BLE001 - per-file problem, the batch goes on
            report_error(path, e)
            failed += 1
            continue
        todo.append((path, modality))
    try:  # load every prior and U-Net needed before any work: a bad --prior stops here
        for modality in dict.fromkeys(m for _, m in todo):
            settings_for(modality)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for path, modality in todo:
        failed += _process(path, modality, args, cfg, settings_for)
    failed = total(rank, failed)
    finish(rank)
    return EXIT_FAILED if failed else EXIT_OK


def _process(path: Path, modality: str, args: argparse.Namespace, cfg, settings_for) -> int:
    """Reconstruct one file under its output lock; returns 1 when anything failed, else 0."""
    from recon.pipeline.outdir import OutputLock, remove_stale_temporaries
    from recon.pipeline.outdir import completed_state, source_record
    from recon.pipeline.run import reconstruct_file

    name = path.stem
    lock = OutputLock(args.out, name)
    if not lock.acquire():
        print(f"skip (in progress in another run): {path}", flush=True)
        return 0
    with lock:
        remove_stale_temporaries(args.out, name)
        state = completed_state(args.out, name, source_record(path), cfg.settings_hash)
        if state == "foreign":
            report_error(path, f"{args.out / name}.h5 exists and was not written by recon reconstruct (raw data?); "
                               "it is never overwritten: choose another --out")
            return 1
        if state == "other-source" and not args.overwrite:
            report_error(path, f"{args.out / name}.json holds the results of another input named {path.name}; "
                               "use another --out (or --overwrite to replace them)")
            return 1
        if state == "complete" and not args.overwrite:
            if not args.quiet:
                print(f"skip (complete): {path}", flush=True)
            return 0
        if state == "settings":
            print(f"recompute (the settings or the input changed since {name}.json was written): {path}", flush=True)
        try:
            summary = reconstruct_file(path, cfg, settings_for, args.out, modality)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            report_error(path, e)
            return 1
    for i, msg in summary.get("failed_slices", {}).items():
        report_error(path, f"slice {i}: {msg}")
    for m, entry in summary["solvers"].items():
        for i, msg in entry.get("failed_slices", {}).items():
            report_error(path, f"{m}: slice {i}: {msg}")
    for msg in summary.get("warnings", []):
        print(f"warning: {path}: {msg}", file=sys.stderr, flush=True)
    if not args.quiet:
        _print_summary(summary, args.out / f"{name}.json")
    return 0 if summary["status"] == "ok" else 1


def _print_summary(summary: dict, json_path: Path) -> None:
    """A few lines per file, written at once (ranks of a torchrun share the terminal)."""
    setting = (f"R={summary['acceleration']:.2f} ({summary['mask']})" if summary["modality"] == "mri"
               else f"{summary['views']} views")
    if summary.get("noise_std") is not None:
        setting += f"  noise std {summary['noise_std']:.3g}"
    lines = [f"{summary['file']}: {setting}  -> {json_path}"]
    for name, s in summary["solvers"].items():
        if s.get("error") is not None:
            lines.append(f"  {name:12s} FAILED: {s['error']}")
            continue
        psnr = "   n/a" if s["psnr"] is None else f"{s['psnr']:6.2f}"
        ssim = "  n/a" if s["ssim"] is None else f"{s['ssim']:.3f}"
        std = "" if s["mean_std"] is None else f"  mean std {s['mean_std']:.4g}"
        lines.append(f"  {name:12s} PSNR {psnr} dB  SSIM {ssim}  {s['wall_time_s']:7.1f} s  NFE {s['nfe']}{std}")
    lines.append(f"  figure: {json_path.with_suffix('.png')}  data: {json_path.with_suffix('.h5')}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
