"""`recon benchmark`: diffusion solvers and baselines side by side on the held-out test data, in one run.

What is measured (and written to ``REPORT.md`` + ``results.json``):

* quality: PSNR / SSIM / NMSE in the fastMRI convention (`recon.metrics`; CT on HU clipped to
  `recon.problems.ct.HU_WINDOW`) per method and acquisition setting;
* cost: wall time per slice, network evaluations (NFE), the fraction of time spent in the network, peak
  memory (CPU: peak resident set size during the method, CUDA: ``torch.cuda.max_memory_allocated``);
* quality against NFE (sweeps of ``dds``, ``projection``, ``ccdf``);
* uncertainty calibration of every posterior method: Spearman rank correlation between the per-pixel
  std and the absolute error (per pixel and after averaging over 8x8 patches), coverage of the
  ``mean +/- 1.96 std`` interval, the sparsification-error area (AUSE), and the mean std per acceleration;
* the project's targets, as pass/fail lines.

Calibration statistics are computed on the object support (reference >= 5% of its maximum): the
background is trivially predictable (error and std both ~0) and would inflate every rank statistic.

Data (test splits only): BrainWeb subjects 51..54 simulated with 8 coils, the real fully sampled T1 brain
(retrospectively undersampled), the two real Poisson-disc undersampled k-space files (no ground truth:
agreement with BART ``pics_reference``, mean std), head-CT slices 84..107 (simulated parallel beam).

Modules:

* `stats`: calibration statistics (numpy): `spearman`, `coverage`, `ause`, `calibration`, ...;
* `presets`: settings, method runs and the presets as data (`PRESETS`, `get_preset`);
* `sources`: the test data; `cases`: a source under one setting as a problem with its reference;
* `execution`: one method on one case (`execute`, `PeakMemory`); `scoring`: the record of an outcome;
* `runner`: `run_benchmark` and its `BenchmarkResult`;
* `aggregate`: selecting and averaging records; `targets`: the pass/fail targets;
* `figures`, `tables`, `report`: the outputs (`write_outputs` writes them all).
"""
from __future__ import annotations

from recon.benchmark.cases import Case, ct_case, mri_case
from recon.benchmark.errors import BenchmarkError
from recon.benchmark.execution import Outcome, execute
from recon.benchmark.presets import CT_SETTINGS, MRI_SETTINGS, PRESETS, QUICK, MethodRun, Preset, get_preset
from recon.benchmark.report import write_outputs
from recon.benchmark.runner import BenchmarkResult, run_benchmark
from recon.benchmark.scoring import score
from recon.benchmark.sources import brainweb_sources, ct_sources
from recon.benchmark.stats import SUPPORT_FRACTION, Z95, coverage

__all__ = [
    # entry points
    "BenchmarkError", "BenchmarkResult", "PRESETS", "Preset", "get_preset", "run_benchmark", "write_outputs",
    # building, running and scoring single cases (solver tuning)
    "CT_SETTINGS", "MRI_SETTINGS", "QUICK", "Case", "MethodRun", "Outcome", "brainweb_sources", "ct_case",
    "ct_sources", "execute", "mri_case", "score",
    # calibration statistics shared with `recon evaluate`
    "SUPPORT_FRACTION", "Z95", "coverage",
]
