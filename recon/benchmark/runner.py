"""The benchmark run: every method of a preset on every case it applies to, collected in a `BenchmarkResult`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from recon.benchmark.cases import Case, ct_case, mri_case
from recon.benchmark.execution import execute
from recon.benchmark.presets import MethodRun, Preset
from recon.benchmark.scoring import score
from recon.benchmark.sources import MRISource, brainweb_sources, ct_sources, poisson_sources, real_t1_source
from recon.data.brainweb import SHARED_DATA
from recon.methods import MethodConfig

PriorProvider = Callable[[str, tuple[int, ...]], Any]   # (modality, image shape) -> Prior or None
UNetProvider = Callable[[str], Any]                      # modality -> U-Net or None


@dataclass
class BenchmarkResult:
    """Everything a run produced: per-(method, case) records, kept images and curves for figures, notes."""

    preset: Preset
    records: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    examples: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    runtime_s: float = 0.0


EXAMPLE_LABELS = ("zero-filled", "fbp", "unet", "dds")


def _run_case(case: Case, runs: Iterable[MethodRun], settings: MethodConfig, result: BenchmarkResult,
              log: Callable[[str], None], keep_example: bool) -> None:
    example: dict[str, np.ndarray] = {}
    if keep_example and case.reference is not None:
        example["reference"] = case.reference
    for run in runs:
        t0 = time.perf_counter()
        try:
            out = execute(run, case, settings)
        except (ImportError, AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError,
                ArithmeticError) as e:  # record and go on: one failing method must not end a long run
            msg = f"{run.label} on {case.name} / {case.setting}: {type(e).__name__}: {e}"
            if msg.split(" on ")[0] not in {s.split(" on ")[0] for s in result.skipped}:
                log(f"  skipped {msg}")
            result.skipped.append(msg)
            continue
        rec, curve = score(run, case, out)
        result.records.append(rec)
        if curve is not None:
            result.curves.setdefault((case.modality, case.setting, run.label), []).append(curve)
        if keep_example and run.label in EXAMPLE_LABELS:
            example[run.label] = out.mean
            if run.label == "dds" and out.std is not None:
                example["dds_std"] = out.std
        psnr = f"{rec['psnr']:.2f} dB" if rec["psnr"] is not None else "-"
        log(f"  {case.name:<28} {case.setting:<15} {run.label:<16} {psnr:>9}  nfe {out.nfe:<5} "
            f"{time.perf_counter() - t0:7.1f} s")
    if example:
        result.examples[(case.modality, case.setting)] = example


def run_benchmark(
    preset: Preset,
    prior_for: PriorProvider,
    unet_for: UNetProvider,
    device: str | torch.device = "cpu",
    root: Path = SHARED_DATA,
    modalities: Sequence[str] = ("mri", "ct"),
    log: Callable[[str], None] = lambda s: None,
) -> BenchmarkResult:
    """Run a preset. `prior_for(modality, shape)` and `unet_for(modality)` return the networks (None to skip
    the methods that need them: they are listed in `BenchmarkResult.skipped`)."""
    dev = torch.device(device)
    result = BenchmarkResult(preset)
    t_start = time.perf_counter()
    if "mri" in modalities:
        _run_mri(preset, prior_for, unet_for, dev, root, result, log)
    if "ct" in modalities:
        _run_ct(preset, prior_for, unet_for, dev, root, result, log)
    result.runtime_s = time.perf_counter() - t_start
    return result


def _settings(preset: Preset, prior: Any, unet: Any) -> MethodConfig:
    return MethodConfig(prior=prior, n_samples=preset.n_samples, seed=0, unet=unet, progress=False)


def _run_mri(preset: Preset, prior_for: PriorProvider, unet_for: UNetProvider, dev: torch.device, root: Path,
             result: BenchmarkResult, log: Callable[[str], None]) -> None:
    sources: list[MRISource] = brainweb_sources(preset.brainweb_subjects, preset.brainweb_slices,
                                                preset.brainweb_kspace, preset.mri_noise_std, root)
    if preset.real_t1:
        sources.append(real_t1_source(root / "fastmri_format" / "brain_t1_8ch_real.h5", preset.real_t1_kspace_crop))
    unet = unet_for("mri")
    for setting in preset.mri_settings:
        log(f"MRI {setting.name}")
        for i, src in enumerate(sources):
            case = mri_case(src, setting, i, dev)
            prior = prior_for("mri", tuple(case.problem.y.shape[-2:]))
            _run_case(case, preset.runs_for("mri", setting.name, i), _settings(preset, prior, unet), result, log,
                      keep_example=(i == 0))
    files = poisson_sources(preset.poisson_files, root)
    if files:
        log("MRI real Poisson-undersampled files")
    for i, src in enumerate(files):
        case = mri_case(src, None, i, dev)
        prior = prior_for("mri", tuple(case.problem.y.shape[-2:]))
        runs = [r for r in preset.runs if "mri" in r.modalities and r.on_file_data]
        _run_case(case, runs, _settings(preset, prior, unet), result, log, keep_example=False)


def _run_ct(preset: Preset, prior_for: PriorProvider, unet_for: UNetProvider, dev: torch.device, root: Path,
            result: BenchmarkResult, log: Callable[[str], None]) -> None:
    sources = ct_sources(preset.ct_slices, preset.ct_size, root)
    unet = unet_for("ct")
    for setting in preset.ct_settings:
        log(f"CT {setting.name}")
        for i, src in enumerate(sources):
            case = ct_case(src, setting, i, dev)
            prior = prior_for("ct", tuple(src.hu.shape))
            _run_case(case, preset.runs_for("ct", setting.name, i), _settings(preset, prior, unet), result, log,
                      keep_example=(i == 0))
