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

Presets are data (`PRESETS`); `run_benchmark` executes one with given priors / U-Nets; `write_outputs`
writes the report, results and figures.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from operators.espirit import espirit_maps
from operators.fft import fft2c, ifft2c, rss
from operators.mri import MultiCoilMRI
from recon import metrics
from recon.data.brainweb import SHARED_DATA, DataNotFoundError
from recon.problems.ct import HU_RANGE, CTProblem, CTSpec, metric_image, simulated_ct_problem
from recon.data.io import FastMRIHeader, center_crop, default_header
from recon.methods import POSTERIOR_METHODS, MethodSettings, run_method
from recon.data.masks import make_mask
from recon.pipeline.writers import json_safe
from recon.problems.mri import MaskSpec, MRIProblem, prepare_mri_slice, reduce_readout, sampled_pattern

SUPPORT_FRACTION = 0.05      # calibration statistics use pixels with reference >= 5% of its maximum
PATCH = 8                    # patch size for patch-averaged Spearman
Z95 = 1.96                   # the +/- interval for coverage
SPARSIFICATION_STEPS = 100   # fractions 0, 1/100, ..., 99/100 removed


class BenchmarkError(ValueError):
    """A benchmark request that cannot run (unknown preset, missing data, bad options)."""


# ---------------------------------------------------------------------------
# calibration metrics (numpy, no torch)
# ---------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long 1D arrays (average ranks for ties); NaN if either is constant."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman: shapes {a.shape} and {b.shape} differ")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def patch_average(x: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Mean over non-overlapping ``patch x patch`` blocks: [H, W] -> [H // patch, W // patch] (edges dropped)."""
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    if h == 0 or w == 0:
        raise ValueError(f"patch_average: image {x.shape} is smaller than one {patch}x{patch} patch")
    return x[..., : h * patch, : w * patch].reshape(*x.shape[:-2], h, patch, w, patch).mean(axis=(-3, -1))


def coverage(error: np.ndarray, std: np.ndarray, z: float = Z95) -> float:
    """Fraction of pixels whose absolute error lies inside ``z * std`` (0.95 for calibrated Gaussian errors, z=1.96)."""
    error, std = np.abs(np.asarray(error, dtype=np.float64)), np.asarray(std, dtype=np.float64)
    return float(np.mean(error <= z * std))


def sparsification_curves(error: np.ndarray, uncertainty: np.ndarray,
                          steps: int = SPARSIFICATION_STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparsification curves (Ilg et al., ECCV 2018): remove the fraction f of pixels with the largest
    uncertainty (resp. the largest error: the oracle) and take the mean absolute error of the rest.

    Returns (fractions float64 [steps], by_uncertainty [steps], oracle [steps]); both curves are divided
    by the mean error of all pixels, so they start at 1.
    """
    e = np.abs(np.asarray(error, dtype=np.float64)).ravel()
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if e.shape != u.shape or e.size == 0:
        raise ValueError(f"sparsification_curves: need equal non-empty inputs, got {e.shape} and {u.shape}")
    fractions = np.arange(steps) / steps
    keep_from = np.minimum(np.rint(fractions * e.size).astype(np.int64), e.size - 1)
    total = max(float(e.mean()), 1e-30)

    def curve(order: np.ndarray) -> np.ndarray:
        tail = np.cumsum(e[order][::-1])[::-1]              # tail[k] = sum of errors after removing k pixels
        return tail[keep_from] / (e.size - keep_from) / total

    return fractions, curve(np.argsort(-u, kind="stable")), curve(np.argsort(-e, kind="stable"))


def ause(error: np.ndarray, uncertainty: np.ndarray, steps: int = SPARSIFICATION_STEPS) -> float:
    """Area between the uncertainty and the oracle sparsification curves (0 for a perfect ranking)."""
    f, by_u, oracle = sparsification_curves(error, uncertainty, steps)
    return float(np.trapezoid(by_u - oracle, f) if hasattr(np, "trapezoid") else np.trapz(by_u - oracle, f))


def support_mask(reference: np.ndarray, fraction: float = SUPPORT_FRACTION) -> np.ndarray:
    """Object support: bool [H, W], pixels where the (non-negative) reference is >= `fraction` of its maximum."""
    return reference >= fraction * float(reference.max())


def calibration(mean: np.ndarray, std: np.ndarray, reference: np.ndarray, support: np.ndarray,
                patch: int = PATCH) -> dict[str, Any]:
    """All calibration statistics of one posterior on one image (display units, real [H, W]).

    Returns spearman (pixels in `support`), spearman_patch (8x8 patch means; patches at least half in
    the support), coverage (+/- 1.96 std), ause, and the sparsification curves (for figures).
    """
    err = np.abs(mean - reference)
    sp = spearman(std[support], err[support])
    inside = patch_average(support.astype(np.float64), patch) >= 0.5
    sp_patch = spearman(patch_average(std, patch)[inside], patch_average(err, patch)[inside])
    f, by_u, oracle = sparsification_curves(err[support], std[support])
    return {"spearman": sp, "spearman_patch": sp_patch, "coverage": coverage(err[support], std[support]),
            "ause": float(np.trapezoid(by_u - oracle, f) if hasattr(np, "trapezoid") else np.trapz(by_u - oracle, f)),
            "curve": (by_u, oracle)}


# ---------------------------------------------------------------------------
# presets (data)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MRISetting:
    """A retrospective MRI undersampling: mask kind, acceleration, fully sampled centre, U-Net in-distribution?"""

    name: str
    kind: str
    acceleration: float
    center_fraction: float
    in_distribution: bool

    def spec(self, seed: int) -> MaskSpec:
        return MaskSpec(self.kind, self.acceleration, self.center_fraction, seed)


@dataclass(frozen=True)
class CTSetting:
    """A simulated parallel-beam CT acquisition: `views` over `arc_degrees` (< 180: limited angle)."""

    name: str
    views: int
    arc_degrees: float = 180.0
    I0: float | None = None

    def spec(self, seed: int) -> CTSpec:
        return CTSpec(self.views, self.arc_degrees, self.I0, seed)

    @property
    def acceleration(self) -> float:
        """Views of a fully sampled 180-degree scan at 1 view per degree, divided by `views` (for std ordering)."""
        return 180.0 / self.views if self.arc_degrees >= 180 else 180.0 / self.arc_degrees


MRI_SETTINGS: tuple[MRISetting, ...] = (
    MRISetting("random-4x", "random", 4.0, 0.08, True),
    MRISetting("random-8x", "random", 8.0, 0.04, True),
    MRISetting("equispaced-4x", "equispaced", 4.0, 0.08, False),
    MRISetting("gaussian2d-8x", "gaussian2d", 8.0, 0.08, False),
    MRISetting("poisson-8x", "poisson", 8.0, 0.08, False),
)
CT_SETTINGS: tuple[CTSetting, ...] = (
    CTSetting("sparse-30", 30),
    CTSetting("sparse-60", 60),
    CTSetting("limited-120deg", 120, arc_degrees=120.0),
)
MRI_BASELINE_RUNS = ("zero-filled", "sense", "l1-wavelet", "tv", "unet")
CT_BASELINE_RUNS = ("fbp", "sirt", "tv", "unet")


@dataclass(frozen=True)
class MethodRun:
    """One method configuration of a preset.

    Attributes:
        label: the name in tables and figures (e.g. ``dds@20``); ``method`` alone means its default NFE.
        method: a `recon.methods` name.
        nfe: network evaluations (None: the method's default).
        hparams: hyper-parameter overrides, as (name, value) pairs.
        settings: names of the settings it runs on (None: every setting of its modalities).
        max_cases: it runs on the first `max_cases` cases of each of those settings only (None: all).
        modalities: where it runs.
        on_file_data: also run on the prospectively undersampled (Poisson) files.
    """

    label: str
    method: str
    nfe: int | None = None
    hparams: tuple[tuple[str, Any], ...] = ()
    settings: tuple[str, ...] | None = None
    max_cases: int | None = None
    modalities: tuple[str, ...] = ("mri", "ct")
    on_file_data: bool = False

    @property
    def is_posterior(self) -> bool:
        return self.method in POSTERIOR_METHODS


@dataclass(frozen=True)
class Preset:
    """Everything a benchmark run does, as data.

    Attributes:
        brainweb_subjects / brainweb_slices: test subjects and slices per subject (evenly spaced through the brain).
        brainweb_kspace: central (readout, phase) k-space block kept of the BrainWeb slices (a lower
            resolution over the same field of view; None: the full 217 x 181).
        real_t1: include the real fully sampled T1 brain file.
        real_t1_kspace_crop: central (readout, phase) k-space crop of the real file (a lower resolution
            acquisition of the same field of view); None keeps the file's size, header and target.
        poisson_files: names under ``data/kspace`` of the real Poisson-undersampled files.
        ct_slices: head-CT test slice indices (84..107); ct_size: centre crop (None: 256 x 256).
        mri_settings / ct_settings: acquisitions.
        runs: method configurations; n_samples: posterior samples per slice.
        reductions: human-readable list of what this preset reduces (goes into the report).
    """

    name: str
    brainweb_subjects: tuple[int, ...]
    brainweb_slices: int
    brainweb_kspace: tuple[int, int] | None
    real_t1: bool
    real_t1_kspace_crop: tuple[int, int] | None
    poisson_files: tuple[str, ...]
    ct_slices: tuple[int, ...]
    ct_size: tuple[int, int] | None
    mri_settings: tuple[MRISetting, ...]
    ct_settings: tuple[CTSetting, ...]
    runs: tuple[MethodRun, ...]
    n_samples: int
    mri_noise_std: float = 0.002
    reductions: tuple[str, ...] = ()

    def runs_for(self, modality: str, setting: str, case_index: int) -> list[MethodRun]:
        """The runs that apply to one case of one setting."""
        out = []
        for r in self.runs:
            if modality not in r.modalities:
                continue
            if r.settings is not None and setting not in r.settings:
                continue
            if r.max_cases is not None and case_index >= r.max_cases:
                continue
            out.append(r)
        return out


_SWEEP_FULL = ("random-4x", "random-8x", "poisson-8x", "sparse-60")


def _baselines() -> tuple[MethodRun, ...]:
    return (tuple(MethodRun(b, b, modalities=("mri",), on_file_data=True) for b in MRI_BASELINE_RUNS if b != "tv")
            + (MethodRun("tv", "tv"),)
            + tuple(MethodRun(b, b, modalities=("ct",)) for b in CT_BASELINE_RUNS if b != "tv"))


QUICK = Preset(
    name="quick",
    brainweb_subjects=(51, 53),
    brainweb_slices=1,
    brainweb_kspace=(144, 120),
    real_t1=True,
    real_t1_kspace_crop=(128, 104),
    poisson_files=("brain_8ch_poisson_bart.h5", "brain_8ch_poisson_sigpy.h5"),
    ct_slices=(96,),
    ct_size=(128, 128),
    mri_settings=MRI_SETTINGS,
    ct_settings=CT_SETTINGS,
    runs=_baselines() + (
        MethodRun("dds", "dds", on_file_data=True),
        MethodRun("ccdf", "ccdf", settings=("random-4x", "random-8x", "sparse-60")),
        MethodRun("dds@10", "dds", 10, settings=("random-8x", "sparse-60")),
        MethodRun("dds@20", "dds", 20, settings=("random-8x",)),
        MethodRun("ccdf@10", "ccdf", 10, settings=("random-8x",)),
        MethodRun("projection@50", "projection", 50, settings=("random-8x",), max_cases=1),
        MethodRun("projection@100", "projection", 100, settings=("random-8x",), max_cases=1),
        MethodRun("score-ald@50", "score-ald", 50, settings=("random-8x",), max_cases=1),
        MethodRun("dps@25", "dps", 25, settings=("random-8x",), max_cases=1),
    ),
    n_samples=4,
    reductions=(
        "BrainWeb test subjects 51 and 53, 1 slice each (full: subjects 51-54, 4 slices each); both presets keep "
        "the central 144 x 120 of the simulated k-space (1.5 mm pixels, whole head in view), the U-Net's "
        "training resolution",
        "real T1 file: central 128 x 104 of k-space, i.e. 2.5x lower resolution over the same field of view "
        "(full: 320 x 256 with the file's target)",
        "head CT: test slice 96 only, centre-cropped to 128 x 128 (full: all 24 test slices at 256 x 256)",
        "4 posterior samples per slice (full: 8)",
        "`dds` at its default NFE (50) everywhere; `ccdf` at its default (20) on random-4x, random-8x and CT "
        "sparse-60 only",
        "NFE sweeps only on random-8x (dds 10/20/50, ccdf 10/20) and CT sparse-60 (dds 10/50)",
        "`projection` (50 and 100 NFE), `score-ald` (50) and `dps` (25) only on the first random-8x case, "
        "far below their defaults (1000 / 600 / 500): these rows show cost and trend, not converged quality, "
        "and the projection-vs-dds target cannot be evaluated",
        "Poisson files: baselines and `dds` only",
    ),
)

FULL = Preset(
    name="full",
    brainweb_subjects=(51, 52, 53, 54),
    brainweb_slices=4,
    brainweb_kspace=(144, 120),     # the U-Net's training resolution (1.5 mm): random masks stay in distribution
    real_t1=True,
    real_t1_kspace_crop=None,
    poisson_files=("brain_8ch_poisson_bart.h5", "brain_8ch_poisson_sigpy.h5"),
    ct_slices=tuple(range(84, 108)),
    ct_size=None,
    mri_settings=MRI_SETTINGS,
    ct_settings=CT_SETTINGS,
    runs=_baselines() + (
        MethodRun("dds", "dds", on_file_data=True),
        MethodRun("projection", "projection", on_file_data=True),
        MethodRun("score-ald", "score-ald", on_file_data=True),
        MethodRun("dps", "dps", on_file_data=True),
        MethodRun("ccdf", "ccdf", on_file_data=True),
        MethodRun("dds@10", "dds", 10),
        MethodRun("dds@20", "dds", 20),
        MethodRun("dds@100", "dds", 100),
        MethodRun("ccdf@10", "ccdf", 10),
        MethodRun("ccdf@40 s=0.5", "ccdf", 40, (("sigma_start", 0.5),)),
        MethodRun("projection@100", "projection", 100, settings=_SWEEP_FULL),
        MethodRun("projection@500", "projection", 500, settings=_SWEEP_FULL),
        MethodRun("projection@2000", "projection", 2000, settings=_SWEEP_FULL),
    ),
    n_samples=8,
)

_IN_DIST = ("random-4x", "random-8x")

TARGETS = Preset(
    name="targets",
    brainweb_subjects=(51, 52, 53, 54),
    brainweb_slices=1,
    brainweb_kspace=(144, 120),
    real_t1=True,
    real_t1_kspace_crop=(128, 104),
    poisson_files=("brain_8ch_poisson_bart.h5", "brain_8ch_poisson_sigpy.h5"),
    ct_slices=(88, 96, 104),
    ct_size=(128, 128),
    mri_settings=MRI_SETTINGS,
    ct_settings=CT_SETTINGS,
    runs=_baselines() + (
        MethodRun("dds", "dds", on_file_data=True),
        MethodRun("ccdf", "ccdf", settings=_IN_DIST + ("sparse-60",)),
        MethodRun("dds@10", "dds", 10, settings=("random-8x", "sparse-60")),
        MethodRun("dds@20", "dds", 20, settings=("random-8x",)),
        MethodRun("dds@100", "dds", 100, settings=("random-8x",)),
        MethodRun("ccdf@10", "ccdf", 10, settings=("random-8x",)),
        MethodRun("projection@1001", "projection", 1001, settings=_IN_DIST, max_cases=2),
        MethodRun("projection@100", "projection", 100, settings=("random-8x",), max_cases=2),
        MethodRun("projection@300", "projection", 300, settings=("random-8x",), max_cases=2),
        MethodRun("score-ald", "score-ald", settings=_IN_DIST, max_cases=1),
        MethodRun("dps", "dps", settings=_IN_DIST, max_cases=1),
    ),
    n_samples=4,
    reductions=(
        "sized to evaluate every target in about an hour on 2 CPU cores: BrainWeb test subjects 51-54, "
        "1 slice each (full: 4 slices each), central 144 x 120 of k-space as in every preset",
        "real T1 file: central 128 x 104 of k-space (full: 320 x 256 with the file's target)",
        "head CT: test slices 88, 96 and 104, centre-cropped to 128 x 128 (full: all 24 at 256 x 256)",
        "4 posterior samples per slice (full: 8)",
        "`dds` at its default NFE everywhere; `ccdf` at its default on random-4x, random-8x and CT sparse-60",
        "NFE sweeps on random-8x (dds 10/20/50/100, ccdf 10/20, projection 100/300/1000) and CT sparse-60 "
        "(dds 10/50)",
        "`projection` at 1001 NFE (501 predictor steps with one corrector each; its default budget of 1000 "
        "buys 999) on the first 2 cases (BrainWeb 51, 52) of random-4x and random-8x only: the speed target "
        "is evaluated on those 4 cases",
        "`score-ald` (600 NFE) and `dps` (500 NFE) at their defaults on the first case of random-4x and "
        "random-8x only (cost and the std ordering, not a quality ranking)",
        "Poisson files: baselines and `dds` only",
    ),
)

PRESETS: dict[str, Preset] = {"quick": QUICK, "targets": TARGETS, "full": FULL}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise BenchmarkError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------
@dataclass
class MRISource:
    """A fully sampled multi-coil slice: complex64 k-space [C, H, W] (centred), its header and optional target.

    `n_maps`: ESPIRiT map sets (2 for data with wrap-around, a field of view smaller than the object);
    `maps` caches the calibration maps (`calibration_maps`), which every setting of this slice shares.
    """

    dataset: str
    name: str
    kspace: np.ndarray
    header: FastMRIHeader
    target: np.ndarray | None = None
    n_maps: int = 1
    maps: torch.Tensor | None = None


@dataclass
class FileSampledSource:
    """Prospectively undersampled k-space [C, H, W] with its own sampling; `reference` is a magnitude
    [H, W] from another reconstruction (BART pics), not ground truth, or None."""

    dataset: str
    name: str
    kspace: np.ndarray
    reference: np.ndarray | None = None


@dataclass
class CTSource:
    """One head-CT slice in HU, float32 [H, W], with its pixel size."""

    dataset: str
    name: str
    hu: np.ndarray
    pixel_mm: float


def brainweb_sources(subjects: Sequence[int], n_slices: int, kspace_size: tuple[int, int] | None, noise_std: float,
                     root: Path = SHARED_DATA) -> list[MRISource]:
    """Simulated 8-coil T1w slices of BrainWeb test subjects, fully sampled, as the U-Net's training data are.

    `n_slices` evenly spaced slices per subject (the two extreme ones of ``n_slices + 2`` are skipped),
    contrast jitter seeded by the subject. With `kspace_size` the resolution is lowered by keeping the
    central (readout, phase) block of the image's k-space: the same field of view, so the whole head stays
    inside it (an image crop that cuts through the head breaks single-set ESPIRiT maps at the edges, and
    with them every SENSE-based method). Each image is then scaled to p99(|x|) = 1, multiplied by 8
    birdcage coil maps and given complex k-space noise of std `noise_std` per real/imaginary part.
    """
    from recon.data.brainweb import brainweb_slices, normalize_p99
    from recon.data.simulate.mri import simulate_multicoil

    out = []
    for s in subjects:
        imgs = brainweb_slices(s, "T1w", np.random.default_rng(1000 + s), n_slices=n_slices + 2, root=root)[1:-1]
        x = torch.from_numpy(np.ascontiguousarray(imgs))
        if kspace_size is not None:
            x = ifft2c(center_crop(fft2c(x), kspace_size))
        x = torch.from_numpy(normalize_p99(x.numpy()))
        for i in range(x.shape[0]):
            rel = noise_std / float(x[i].abs().max())          # simulate_multicoil's noise is relative to the max
            k, _, _ = simulate_multicoil(x[i], n_coils=8, noise_std=rel, add_phase=False, seed=100 * s + i)
            out.append(MRISource("brainweb", f"brainweb-s{s}-{i}", k.numpy(), default_header(tuple(k.shape))))
    return out


def real_t1_source(path: Path, kspace_crop: tuple[int, int] | None) -> MRISource:
    """The real 8-coil T1 brain (fastMRI layout, slice 0). With `kspace_crop` the central (readout, phase)
    block of k-space is kept (a lower-resolution acquisition; reference = RSS of the cropped data).

    The acquisition's field of view is smaller than the head (wrap-around along the phase axis), so the
    problem uses 2 ESPIRiT map sets: with one set, SENSE of the fully sampled data reaches only ~25 dB
    against the RSS reference, with two ~40-44 dB.
    """
    from recon.data.io import load_fastmri

    if not path.exists():
        raise DataNotFoundError(f"real T1 file not found at {path}")
    with load_fastmri(path) as vol:
        k = np.asarray(vol.kspace[0])
        if kspace_crop is None:
            target = None if vol.target is None else np.asarray(vol.target[0])
            return MRISource("real-t1", path.stem, k, vol.header, target, n_maps=2)
    k = center_crop(torch.from_numpy(k), kspace_crop).numpy()
    return MRISource("real-t1", f"{path.stem}-k{kspace_crop[0]}x{kspace_crop[1]}", k, default_header(k.shape),
                     n_maps=2)


def poisson_sources(names: Sequence[str], root: Path = SHARED_DATA) -> list[FileSampledSource]:
    """The real Poisson-undersampled files; the BART file's 2-map-set ``pics_reference`` is combined by RSS."""
    import h5py

    out = []
    for n in names:
        p = root / "kspace" / n
        if not p.exists():
            raise DataNotFoundError(f"Poisson k-space file not found at {p}")
        with h5py.File(p, "r") as f:
            k = f["kspace"][()].astype(np.complex64)
            ref = None
            if "pics_reference" in f:
                ref = np.sqrt((np.abs(f["pics_reference"][()]) ** 2).sum(0)).astype(np.float32)
        out.append(FileSampledSource("poisson-" + Path(n).stem.split("_")[-1], Path(n).stem, k, ref))
    return out


def ct_sources(indices: Sequence[int], size: tuple[int, int] | None, root: Path = SHARED_DATA,
               split: str = "test") -> list[CTSource]:
    """Head-CT slices (HU) of one split, centre-cropped to `size`; indices must lie in that split
    (test: 84..107, validation: 72..83)."""
    import h5py

    from recon.data.ct_slices import CT_SPLITS, ct_path

    allowed = CT_SPLITS[split]
    bad = [i for i in indices if i not in allowed]
    if bad:
        raise BenchmarkError(f"CT slices {bad} are not in the {split} split {allowed[0]}..{allowed[-1]}")
    with h5py.File(ct_path(root), "r") as f:
        pixel = float(f.attrs["spacing_mm_xyz"][0])
        out = []
        for i in indices:
            hu = f["volume"][i].astype(np.float32)
            if size is not None:
                hu = center_crop(torch.from_numpy(hu), size).numpy()
            out.append(CTSource("head-ct", f"head-ct-{i}", np.ascontiguousarray(hu), pixel))
    return out


# ---------------------------------------------------------------------------
# running one method
# ---------------------------------------------------------------------------
class PeakMemory:
    """Peak memory (MiB) during a block, and its increase over the start (`extra_mib`).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: peak resident set size (Linux: VmHWM after resetting it
    through /proc/self/clear_refs; elsewhere the process-lifetime ``getrusage`` maximum, marked by
    ``kind = "process max RSS"``).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")
        self.extra_mib = float("nan")
        self.kind = ""
        self._start = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max allocated"
        else:
            self.kind = "peak RSS" if self._reset_hwm() else "process max RSS"
            self._start = self._status_kib("VmRSS:") / 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "peak RSS":
            self.mib = self._status_kib("VmHWM:") / 1024
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.extra_mib = max(self.mib - self._start, 0.0) if self._start > 0 else float("nan")

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakMemory._status_kib("VmHWM:") > 0
        except OSError:
            return False

    @staticmethod
    def _status_kib(key: str) -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return float(line.split()[1])
        except OSError:
            pass
        return 0.0


@dataclass
class Case:
    """One problem: a source under one setting, with its reference in display units.

    Attributes:
        reference: MRI magnitude [rH, rW] or CT HU [H, W]; None without ground truth.
        pics: BART pics magnitude (Poisson file), for agreement only.
        display: posterior images -> display units (MRI magnitude crop, CT HU).
    """

    modality: str
    dataset: str
    name: str
    setting: str
    index: int
    problem: MRIProblem | CTProblem
    reference: np.ndarray | None
    display: Callable[[torch.Tensor], torch.Tensor]
    acceleration: float
    pics: np.ndarray | None = None


def _mri_display(problem: MRIProblem) -> Callable[[torch.Tensor], torch.Tensor]:
    def show(img: torch.Tensor) -> torch.Tensor:
        return problem.magnitude(img) if img.is_complex() else center_crop(img.abs(), problem.crop)
    return show


CALIB_LINES = 24   # ESPIRiT calibration: central lines of the fully sampled data (a separate reference scan)


def retrospective_problem(src: MRISource, setting: MRISetting, seed: int, device: torch.device) -> MRIProblem:
    """Undersample a fully sampled slice with `setting`; coil maps from a separate calibration.

    The maps are ESPIRiT maps of the central `CALIB_LINES` phase lines of the fully sampled data (an
    external reference scan) rather than of the mask's own centre: ESPIRiT needs >= 16 calibration lines,
    and the fastMRI centre fractions (0.08 / 0.04) give 5-14 lines at these matrix sizes. Every method
    sees the same maps; zero-filled and U-Net baselines use the measured k-space only.
    """
    k = _full_kspace(src)
    h, w = k.shape[-2:]
    left, right = src.header.acquired_lines
    m = make_mask(setting.kind, (h, w), setting.acceleration, setting.center_fraction, seed=seed,
                  acquired=(left, right))
    mask = m.mask.expand(h, w) if m.mask.dim() == 1 else m.mask
    maps = calibration_maps(src)
    crop = (min(src.header.recon_size[0], h), min(src.header.recon_size[1], w))
    ref = torch.as_tensor(src.target) if src.target is not None else rss(ifft2c(k))
    y, mask, maps = (k * mask).to(device), mask.to(device), maps.to(device)
    return MRIProblem(y, mask, maps, MultiCoilMRI(maps, mask), crop, center_crop(ref, crop).float().to(device),
                      m.acceleration, True, setting.kind)


def _full_kspace(src: MRISource) -> torch.Tensor:
    """The source's k-space [C, H, W] without readout oversampling; checks that it is fully sampled."""
    k = torch.as_tensor(src.kspace).to(torch.complex64)
    if not bool(sampled_pattern(k).any(0)[slice(*src.header.acquired_lines)].all()):
        raise BenchmarkError(f"{src.name}: not fully sampled over its acquired lines; cannot undersample it")
    return reduce_readout(k, src.header.recon_size[0])


def calibration_maps(src: MRISource) -> torch.Tensor:
    """ESPIRiT maps complex64 [C, H, W] (or [M, C, H, W]) from the central `CALIB_LINES` acquired phase
    lines (cached on `src`)."""
    if src.maps is None:
        k = _full_kspace(src)
        left, right = src.header.acquired_lines
        centre = (left + right) // 2
        lo, hi = max(centre - CALIB_LINES // 2, left), min(centre + CALIB_LINES // 2, right)
        calib = torch.zeros_like(k)
        calib[..., lo:hi] = k[..., lo:hi]
        src.maps = espirit_maps(calib, calib_width=CALIB_LINES, n_maps=src.n_maps)
    return src.maps


def mri_case(src: MRISource | FileSampledSource, setting: MRISetting | None, index: int, device: torch.device) -> Case:
    """Undersample a fully sampled source with `setting` (mask seed = case index), or keep a file's own sampling
    (maps then come from the file's own fully sampled centre)."""
    if isinstance(src, FileSampledSource):
        p = prepare_mri_slice(src.kspace, default_header(src.kspace.shape), MaskSpec(), device=device)
        return Case("mri", src.dataset, src.name, "file", index, p, None, _mri_display(p), p.acceleration,
                    src.reference)
    assert setting is not None
    p = retrospective_problem(src, setting, index, device)
    ref = None if p.reference is None else p.reference.cpu().numpy()
    return Case("mri", src.dataset, src.name, setting.name, index, p, ref, _mri_display(p), p.acceleration)


def ct_case(src: CTSource, setting: CTSetting, index: int, device: torch.device) -> Case:
    p = simulated_ct_problem(src.hu, src.pixel_mm, setting.spec(seed=index), device=str(device))
    return Case("ct", src.dataset, src.name, setting.name, index, p, src.hu, p.to_hu, setting.acceleration)


@dataclass
class Outcome:
    """A method's images on one case (display units) and its costs."""

    mean: np.ndarray
    std: np.ndarray | None
    nfe: int
    wall_s: float
    network_s: float
    peak_mib: float
    extra_mib: float
    peak_kind: str


def execute(run: MethodRun, case: Case, settings: MethodSettings) -> Outcome:
    """Run one method on one case; images in display units, std over the displayed samples (N > 1)."""
    s = dataclasses.replace(settings, nfe=run.nfe, hparams={run.method: dict(run.hparams)} if run.hparams else {})
    device = case.problem.y.device
    prior = s.prior
    nfe_before = prior.nfe if prior is not None else 0
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        post = run_method(run.method, case.problem, s)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    mean = case.display(post.mean).float().cpu().numpy()
    std = None
    if post.samples is not None and post.samples.shape[0] > 1:
        std = case.display(post.samples).float().std(0).cpu().numpy()
    nfe = post.nfe or ((prior.nfe - nfe_before) if (prior is not None and run.is_posterior) else 0)
    return Outcome(mean, std, int(nfe), wall, float(post.network_time), mem.mib, mem.extra_mib, mem.kind)


# ---------------------------------------------------------------------------
# scoring one outcome
# ---------------------------------------------------------------------------
def quality(case: Case, image: np.ndarray) -> dict[str, float | None]:
    """PSNR / SSIM / NMSE against the reference (fastMRI convention; CT on the clipped HU window)."""
    if case.reference is None:
        return {"psnr": None, "ssim": None, "nmse": None}
    if case.modality == "ct":
        ref, pred = metric_image(case.reference), metric_image(image)
        return {"psnr": metrics.psnr(ref, pred, HU_RANGE), "ssim": metrics.ssim(ref, pred, HU_RANGE),
                "nmse": metrics.nmse(ref, pred)}
    return metrics.all_metrics(case.reference, image)


def agreement(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Agreement with another reconstruction after a least-squares intensity match (BART pics rescales the
    data internally, so its intensities are in other units): PSNR, SSIM, NMSE and the scale applied."""
    a = float((reference * image).sum() / max(float((image * image).sum()), 1e-30))
    return {"psnr": metrics.psnr(reference, a * image), "ssim": metrics.ssim(reference, a * image),
            "nmse": metrics.nmse(reference, a * image), "scale": a}


def support_of(case: Case, image: np.ndarray) -> np.ndarray:
    """Object support from the reference (CT: on the clipped HU window), or from `image` without one."""
    if case.reference is None:
        return support_mask(metric_image(image) if case.modality == "ct" else image)
    return support_mask(metric_image(case.reference) if case.modality == "ct" else case.reference)


def std_scale(case: Case, image: np.ndarray) -> float:
    """Divisor that makes a mean std comparable across cases: MRI the reference (or image) maximum, CT 1 (HU)."""
    if case.modality == "ct":
        return 1.0
    return float((case.reference if case.reference is not None else image).max())


def score(run: MethodRun, case: Case, out: Outcome) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """The record of one outcome, and its sparsification curves (or None)."""
    rec: dict[str, Any] = {
        "modality": case.modality, "dataset": case.dataset, "case": case.name, "setting": case.setting,
        "acceleration": round(float(case.acceleration), 3), "label": run.label, "method": run.method,
        "posterior": run.is_posterior, "hparams": dict(run.hparams), "nfe": out.nfe, "wall_s": out.wall_s,
        "network_s": out.network_s, "peak_mib": out.peak_mib, "extra_mib": out.extra_mib,
        "peak_kind": out.peak_kind,
        **quality(case, out.mean),
    }
    if case.pics is not None:
        rec["agreement_pics"] = agreement(case.pics, out.mean)
    curve = None
    if out.std is not None:
        sup = support_of(case, out.mean)
        rec["mean_std"] = float(out.std[sup].mean())
        rec["mean_std_rel"] = rec["mean_std"] / std_scale(case, out.mean)
        if case.reference is not None:
            cal = calibration(out.mean, out.std, case.reference, sup)
            curve = cal.pop("curve")
            rec.update(cal)
    return rec, curve


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------
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


def _run_case(case: Case, runs: Iterable[MethodRun], settings: MethodSettings, result: BenchmarkResult,
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


def _settings(preset: Preset, prior: Any, unet: Any) -> MethodSettings:
    return MethodSettings(prior=prior, n_samples=preset.n_samples, seed=0, unet=unet, progress=False)


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


# ---------------------------------------------------------------------------
# aggregation and targets
# ---------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def select(records: Sequence[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """Records whose fields equal every given value (a tuple/list/set value means "one of")."""
    def ok(r: dict[str, Any]) -> bool:
        return all((r.get(k) in v) if isinstance(v, (tuple, list, set)) else r.get(k) == v for k, v in where.items())
    return [r for r in records if ok(r)]


def labels_in_order(preset: Preset, records: Sequence[dict[str, Any]], modality: str) -> list[str]:
    present = {r["label"] for r in records if r["modality"] == modality}
    first = [m for m in ("zero-filled", "fbp", "sense", "sirt", "l1-wavelet", "tv", "unet") if m in present]
    rest = [r.label for r in preset.runs if r.label in present and r.label not in first]
    return first + rest


def paired_gap(records: Sequence[dict[str, Any]], a: str, b: str, key: str = "psnr",
               **where: Any) -> tuple[float | None, int]:
    """Mean of ``a - b`` over cases where both labels have a value (and how many cases)."""
    ra = {r["case"]: r[key] for r in select(records, label=a, **where) if r.get(key) is not None}
    rb = {r["case"]: r[key] for r in select(records, label=b, **where) if r.get(key) is not None}
    common = sorted(set(ra) & set(rb))
    return (_mean(ra[c] - rb[c] for c in common), len(common)) if common else (None, 0)


def _best_label(records: Sequence[dict[str, Any]], method: str, cond: Callable[[int], bool],
                **where: Any) -> str | None:
    """The label of `method` with the largest measured NFE satisfying `cond` (ties: first seen)."""
    cands = {}
    for r in select(records, method=method, **where):
        if cond(r["nfe"]) and r.get("psnr") is not None:
            cands.setdefault(r["label"], r["nfe"])
    return max(cands, key=lambda k: cands[k]) if cands else None


@dataclass
class Target:
    """One pass/fail line of the report."""

    name: str
    status: str                      # "PASS", "FAIL" or "NOT EVALUATED"
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"- **{self.status}** — {self.name}: {self.detail}"


def evaluate_targets(preset: Preset, records: Sequence[dict[str, Any]]) -> list[Target]:
    """The four targets of the benchmark (see module docstring) on the measured records."""
    return [_target_speed(preset, records), _target_ood(preset, records), _target_std_order(preset, records),
            _target_spearman(records)]


def _target_speed(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "`dds` at <= 50 NFE within 0.5 dB PSNR of `projection` at >= 1000 NFE (MRI settings)"
    mri = select(records, modality="mri")
    values, fails, missing = {}, [], []
    for s in preset.mri_settings:
        d = _best_label(mri, "dds", lambda n: 0 < n <= 50, setting=s.name)
        p = _best_label(mri, "projection", lambda n: n >= 1000, setting=s.name)
        if d is None or p is None:
            missing.append(s.name)
            continue
        gap, n = paired_gap(mri, d, p, setting=s.name)
        values[s.name] = {"dds": d, "projection": p, "gap_db": gap, "cases": n}
        if gap is not None and gap < -0.5:
            fails.append(f"{s.name} ({gap:+.2f} dB)")
    if not values:
        return _speed_not_evaluated(name, mri)
    text = "; ".join(f"{k}: {v['dds']} - {v['projection']} = {v['gap_db']:+.2f} dB ({v['cases']} cases)"
                     for k, v in values.items())
    if missing:
        text += f"; not measured on {', '.join(missing)}"
    if fails:
        text += f". Missed on {', '.join(fails)}"
    return Target(name, "FAIL" if fails else "PASS", text, values)


def _speed_not_evaluated(name: str, mri: Sequence[dict[str, Any]]) -> Target:
    """Target 1 without a >= 1000-NFE projection run: say so, and compare with the largest budget that ran."""
    most = _best_label(mri, "projection", lambda n: n > 0)
    if most is None:
        return Target(name, "NOT EVALUATED", "projection was not run in this preset")
    setting = next(r["setting"] for r in select(mri, label=most))
    d = _best_label(mri, "dds", lambda n: 0 < n <= 50, setting=setting)
    text = f"no projection run with >= 1000 NFE in this preset (the largest budget was {most})"
    values: dict[str, Any] = {}
    if d is not None:
        gap, n = paired_gap(mri, d, most, setting=setting)
        if gap is not None:
            values = {"dds": d, "projection": most, "setting": setting, "gap_db": gap, "cases": n}
            text += (f"; for information, on {setting} ({n} case{'s' if n > 1 else ''}) {d} - {most} = "
                     f"{gap:+.2f} dB; see the quality-vs-NFE figure")
    return Target(name, "NOT EVALUATED", text, values)


def _target_ood(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "`dds` beats the U-Net by >= 2 dB PSNR on the out-of-distribution masks"
    mri = select(records, modality="mri")
    values, fails = {}, []
    for s in preset.mri_settings:
        gap, n = paired_gap(mri, "dds", "unet", setting=s.name)
        if gap is None:
            continue
        values[s.name] = {"gap_db": gap, "cases": n, "in_distribution": s.in_distribution}
        if not s.in_distribution and gap < 2.0:
            fails.append(s.name)
    ood = {k: v for k, v in values.items() if not v["in_distribution"]}
    if not ood:
        return Target(name, "NOT EVALUATED", "`dds` or `unet` missing on the out-of-distribution settings", values)
    text = "OOD " + ", ".join(f"{k} {v['gap_db']:+.2f} dB" for k, v in ood.items())
    text = f"mean paired PSNR gap dds - unet over {max(v['cases'] for v in values.values())} cases per setting: " + text
    ind = {k: v for k, v in values.items() if v["in_distribution"]}
    if ind:
        text += "; in distribution (reported, no target) " + ", ".join(
            f"{k} {v['gap_db']:+.2f} dB" for k, v in ind.items())
    return Target(name, "FAIL" if fails else "PASS", text, values)


def _target_std_order(preset: Preset, records: Sequence[dict[str, Any]]) -> Target:
    name = "mean posterior std increases with acceleration (random 4x < random 8x) for every posterior method"
    lo, hi = "random-4x", "random-8x"
    values, fails = {}, []
    for label in [r.label for r in preset.runs if r.is_posterior]:
        a = {r["case"]: r["mean_std_rel"] for r in select(records, label=label, setting=lo) if "mean_std_rel" in r}
        b = {r["case"]: r["mean_std_rel"] for r in select(records, label=label, setting=hi) if "mean_std_rel" in r}
        common = sorted(set(a) & set(b))
        if not common:
            continue
        m4, m8 = _mean(a[c] for c in common), _mean(b[c] for c in common)
        values[label] = {"4x": m4, "8x": m8, "cases": len(common)}
        if not (m4 is not None and m8 is not None and m4 < m8):
            fails.append(label)
    if not values:
        return Target(name, "NOT EVALUATED", "no posterior method ran at both random 4x and 8x", values)
    text = ", ".join(f"{k}: {100 * v['4x']:.2f}% -> {100 * v['8x']:.2f}%" for k, v in values.items())
    return Target(name, "FAIL" if fails else "PASS",
                  text + " (mean std over the support, % of the reference maximum)"
                  + (f". Not increasing for {', '.join(fails)}" if fails else ""), values)


def _target_spearman(records: Sequence[dict[str, Any]]) -> Target:
    name = "Spearman(std, |error|) >= 0.4 after 8x8 patch averaging for `dds`"
    rs = [r for r in select(records, label="dds") if r.get("spearman_patch") is not None]
    if not rs:
        return Target(name, "NOT EVALUATED", "no `dds` run with ground truth")
    per = {m: _mean(r["spearman_patch"] for r in rs if r["modality"] == m) for m in ("mri", "ct")}
    per = {k: v for k, v in per.items() if v is not None}
    overall = _mean(r["spearman_patch"] for r in rs)
    assert overall is not None
    text = f"mean over {len(rs)} cases {overall:.3f} (" + ", ".join(
        f"{k.upper()} {v:.3f}" for k, v in per.items()) + ")"
    return Target(name, "PASS" if overall >= 0.4 else "FAIL", text, {"overall": overall, **per})


def summary_table(records: Sequence[dict[str, Any]], group: Sequence[str], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Means of `keys` over records grouped by the fields in `group` (network fraction = sum/sum)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    out = []
    for k, rs in groups.items():
        row = dict(zip(group, k))
        row["n"] = len(rs)
        for key in keys:
            row[key] = _mean(r.get(key) for r in rs)
        wall = sum(r["wall_s"] for r in rs)
        row["network_fraction"] = (sum(r["network_s"] for r in rs) / wall) if wall > 0 and rs[0]["posterior"] else None
        row["peak_mib"] = max(r["peak_mib"] for r in rs)
        out.append(row)
    return out


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_quality(result: BenchmarkResult, modality: str, path: Path) -> bool:
    """Grouped bars: PSNR and SSIM per setting for each method at its default settings (no sweep labels)."""
    recs = [r for r in result.records if r["modality"] == modality and r.get("psnr") is not None]
    if not recs:
        return False
    plt = _plt()
    settings = [s.name for s in (result.preset.mri_settings if modality == "mri" else result.preset.ct_settings)]
    settings = [s for s in settings if select(recs, setting=s)]
    labels = [lab for lab in labels_in_order(result.preset, recs, modality) if "@" not in lab]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(settings) + 2), 7), constrained_layout=True)
    width = 0.8 / max(len(labels), 1)
    for ax, key in zip(axes, ("psnr", "ssim")):
        for j, lab in enumerate(labels):
            vals = [_mean(r[key] for r in select(recs, setting=s, label=lab)) for s in settings]
            ax.bar(np.arange(len(settings)) + j * width, [v if v is not None else 0 for v in vals], width, label=lab)
        ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, settings)
        ax.set_ylabel("PSNR (dB)" if key == "psnr" else "SSIM")
        lo = min((r[key] for r in recs), default=0)
        ax.set_ylim(lo - (2 if key == "psnr" else 0.05), None)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(labels), 5), fontsize=8)
    axes[0].set_title(f"{modality.upper()}: quality per setting (mean over cases)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_nfe(result: BenchmarkResult, path: Path) -> bool:
    """PSNR against NFE for each posterior method family, one panel per (modality, setting) with a sweep."""
    recs = [r for r in result.records if r["posterior"] and r.get("psnr") is not None]
    panels = sorted({(r["modality"], r["setting"]) for r in recs
                     if len({x["label"] for x in select(recs, modality=r["modality"], setting=r["setting"])}) > 2})
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    for ax, (mod, setting) in zip(axes[0], panels):
        sub = select(recs, modality=mod, setting=setting)
        case_sets = [{r["case"] for r in select(sub, label=lab)} for lab in {r["label"] for r in sub}]
        common = set.intersection(*case_sets)          # probes run on fewer cases: compare on the shared ones
        sub = [r for r in sub if r["case"] in common]
        for method in POSTERIOR_METHODS:
            pts = sorted({(r["nfe"], r["label"]) for r in sub if r["method"] == method})
            if pts:
                ax.plot([n for n, _ in pts], [_mean(r["psnr"] for r in select(sub, label=lab)) for _, lab in pts],
                        "o-", label=method)
        for base, style in (("unet", "--"), ("l1-wavelet", ":"), ("tv", "-."), ("sirt", ":")):
            b = _mean(r["psnr"] for r in result.records if r["modality"] == mod and r["setting"] == setting
                      and r["label"] == base and r["case"] in common and r.get("psnr") is not None)
            if b is not None:
                ax.axhline(b, color="gray", linestyle=style, linewidth=1, label=base)
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{mod.upper()} {setting} ({len(common)} case{'s' if len(common) > 1 else ''})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_cost(result: BenchmarkResult, path: Path) -> bool:
    """Seconds per slice (log scale) and network-time fraction per method label, per modality."""
    mods = [m for m in ("mri", "ct") if select(result.records, modality=m)]
    if not mods:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(mods), 1, figsize=(11, 3.6 * len(mods)), squeeze=False, constrained_layout=True)
    for ax, mod in zip(axes[:, 0], mods):
        recs = [r for r in select(result.records, modality=mod) if r["setting"] != "file"]
        labels = labels_in_order(result.preset, recs, mod)
        secs = [_mean(r["wall_s"] for r in select(recs, label=lab)) or 0.0 for lab in labels]
        nfes = [max((r["nfe"] for r in select(recs, label=lab)), default=0) for lab in labels]
        bars = ax.bar(labels, secs, color=["tab:blue" if n else "tab:gray" for n in nfes])
        for b, n, lab in zip(bars, nfes, labels):
            rs = select(recs, label=lab)
            w = sum(r["wall_s"] for r in rs)
            frac = sum(r["network_s"] for r in rs) / w if w > 0 and rs[0]["posterior"] else None
            txt = f"{n} NFE" + (f"\n{100 * frac:.0f}% net" if frac is not None else "")
            ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylim(top=max(secs + [1e-3]) * 8)          # room for the annotations
        ax.set_ylabel("seconds per slice")
        ax.set_title(f"{mod.upper()}: time per slice (grey: no network / classical)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_calibration(result: BenchmarkResult, path: Path) -> bool:
    """Left: sparsification error (uncertainty curve minus oracle curve) of each posterior label, mean over
    the MRI random-8x cases (or the first setting with curves); right: mean std against acceleration per posterior
    label (MRI random masks)."""
    if not result.curves:
        return False
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    keys = sorted(result.curves)
    setting = next((k[1] for k in keys if k[:2] == ("mri", "random-8x")), keys[0][1])
    mod = next(k[0] for k in keys if k[1] == setting)
    for (m, s, label), curves in sorted(result.curves.items()):
        if (m, s) != (mod, setting):
            continue
        gap = np.mean([c[0] - c[1] for c in curves], 0)
        a0.plot(np.arange(len(gap)) / len(gap), gap, label=f"{label} (AUSE {np.trapezoid(gap, dx=1 / len(gap)):.3f})"
                if hasattr(np, "trapezoid") else label)
    a0.set_xlabel("fraction of pixels removed (largest std first)")
    a0.set_ylabel("sparsification error (curve - oracle)")
    a0.set_title(f"sparsification error, {mod.upper()} {setting} (0 = perfect ranking)")
    a0.legend(fontsize=7)
    a0.grid(alpha=0.3)
    for label in [r.label for r in result.preset.runs if r.is_posterior]:
        pts = []
        for s in result.preset.mri_settings:
            if s.kind != "random":
                continue
            v = _mean(r.get("mean_std_rel") for r in select(result.records, label=label, setting=s.name))
            if v is not None:
                pts.append((s.acceleration, 100 * v))
        if len(pts) > 1:
            a1.plot(*zip(*pts), "o-", label=label)
    a1.set_xlabel("acceleration (random 1D mask)")
    a1.set_ylabel("mean std (% of reference max)")
    a1.set_title("MRI: mean posterior std vs acceleration")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_examples(result: BenchmarkResult, modality: str, path: Path) -> bool:
    """One row per setting (first case): reference, zero-filled / FBP, U-Net, dds mean, |dds error|, dds std."""
    rows = [(s, result.examples[(modality, s)]) for s in
            [x.name for x in (result.preset.mri_settings if modality == "mri" else result.preset.ct_settings)]
            if (modality, s) in result.examples]
    if not rows:
        return False
    plt = _plt()
    first = "fbp" if modality == "ct" else "zero-filled"
    cols = ["reference", first, "unet", "dds", "|dds error|", "dds std"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.3 * len(rows)), squeeze=False,
                             constrained_layout=True)
    for i, (setting, ex) in enumerate(rows):
        ref = ex["reference"]
        shown = (lambda x: metric_image(x)) if modality == "ct" else (lambda x: x)
        vmax = float(np.percentile(shown(ref), 99.5))
        err = np.abs(ex["dds"] - ref) if "dds" in ex else None
        std = ex.get("dds_std")
        emax = max(float(np.percentile(err, 99.5)) if err is not None else 0.0,
                   float(np.percentile(std, 99.5)) if std is not None else 0.0, 1e-12)
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == "|dds error|":
                img, kw = err, {"cmap": "magma", "vmin": 0, "vmax": emax}
            elif c == "dds std":
                img, kw = std, {"cmap": "magma", "vmin": 0, "vmax": emax}
            else:
                img = ex.get(c)
                img = None if img is None else shown(img)
                kw = {"cmap": "gray", "vmin": 0, "vmax": vmax}
            if img is not None:
                ax.imshow(img, **kw)
            if i == 0:
                ax.set_title(c, fontsize=9)
            if j == 0:
                ax.set_ylabel(setting, fontsize=9)
    fig.suptitle(f"{modality.upper()} examples (first case per setting); error and std share one colour scale")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# report and results
# ---------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    al = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else "---" for a in al]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def quality_tables(result: BenchmarkResult) -> list[tuple[str, str]]:
    """(title, markdown) per dataset with ground truth: rows = labels, columns = settings, cells PSNR / SSIM."""
    out = []
    recs = [r for r in result.records if r.get("psnr") is not None]
    for dataset in dict.fromkeys(r["dataset"] for r in recs):
        sub = select(recs, dataset=dataset)
        mod = sub[0]["modality"]
        settings = [s.name for s in (result.preset.mri_settings if mod == "mri" else result.preset.ct_settings)
                    if select(sub, setting=s.name)]
        rows = []
        for lab in labels_in_order(result.preset, sub, mod):
            cells = []
            for s in settings:
                rs = select(sub, label=lab, setting=s)
                cells.append(f"{_mean(r['psnr'] for r in rs):.2f} / {_mean(r['ssim'] for r in rs):.3f}"
                             + ("" if len(rs) == len({r['case'] for r in select(sub, setting=s)}) else f" ({len(rs)})")
                             if rs else "–")
            rows.append([f"`{lab}`", *cells])
        n = len({r["case"] for r in sub})
        out.append((f"{dataset} ({n} case{'s' if n > 1 else ''}): PSNR dB / SSIM", _table(["method", *settings], rows)))
    return out


def cost_table(result: BenchmarkResult) -> str:
    rows = []
    for mod in ("mri", "ct"):
        recs = [r for r in select(result.records, modality=mod) if r["setting"] != "file"]
        for lab in labels_in_order(result.preset, recs, mod):
            rs = select(recs, label=lab)
            wall = sum(r["wall_s"] for r in rs)
            frac = sum(r["network_s"] for r in rs) / wall if wall > 0 and rs[0]["posterior"] else None
            rows.append([mod.upper(), f"`{lab}`", max(r["nfe"] for r in rs), len(rs), _fmt(wall / len(rs), 2),
                         "–" if frac is None else f"{100 * frac:.0f}%", _fmt(max(r["peak_mib"] for r in rs), 0),
                         _fmt(max(r["extra_mib"] for r in rs), 0)])
    return _table(["modality", "method", "NFE", "slices", "s / slice", "network time", "peak MiB", "+MiB"], rows,
                  "llrrrrrr")


def calibration_table(result: BenchmarkResult) -> str:
    rows = []
    recs = [r for r in result.records if r.get("spearman") is not None]
    for mod in ("mri", "ct"):
        settings = [s.name for s in (result.preset.mri_settings if mod == "mri" else result.preset.ct_settings)]
        for lab in labels_in_order(result.preset, select(recs, modality=mod), mod):
            for s in settings:
                rs = select(recs, modality=mod, label=lab, setting=s)
                if not rs:
                    continue
                unit = 100.0 if mod == "mri" else 1.0
                rows.append([mod.upper(), f"`{lab}`", s, len(rs), _fmt(_mean(r["spearman"] for r in rs), 3),
                             _fmt(_mean(r["spearman_patch"] for r in rs), 3), _fmt(_mean(r["coverage"] for r in rs), 3),
                             _fmt(_mean(r["ause"] for r in rs), 3),
                             _fmt(unit * (_mean(r["mean_std_rel"] for r in rs) or float("nan")), 2)])
    return _table(["modality", "method", "setting", "cases", "Spearman px", "Spearman 8x8", "coverage 95%",
                   "AUSE", "mean std"], rows, "lllrrrrrr")


def file_table(result: BenchmarkResult) -> str:
    recs = select(result.records, setting="file")
    rows = []
    for r in recs:
        ag = r.get("agreement_pics")
        agree = [_fmt(ag["psnr"]), _fmt(ag["ssim"], 3), _fmt(ag["nmse"], 4)] if ag else ["–"] * 3
        std = _fmt(100 * r["mean_std_rel"], 2) if r.get("mean_std_rel") is not None else "–"
        rows.append([r["dataset"], f"`{r['label']}`", _fmt(r["acceleration"], 2), *agree, std, _fmt(r["wall_s"], 1)])
    return _table(["file", "method", "R", "PSNR vs pics", "SSIM vs pics", "NMSE vs pics", "mean std (% max)", "s"],
                  rows, "llrrrrrr")


def std_table(result: BenchmarkResult, modality: str) -> str | None:
    """Mean std per setting (rows: posterior labels; columns: settings by increasing acceleration)."""
    settings = (sorted(result.preset.mri_settings, key=lambda s: s.acceleration) if modality == "mri"
                else list(result.preset.ct_settings))
    recs = [r for r in select(result.records, modality=modality, posterior=True) if r.get("mean_std_rel") is not None]
    if not recs:
        return None
    unit = 100.0 if modality == "mri" else 1.0
    rows = []
    for lab in labels_in_order(result.preset, recs, modality):
        cells = [_mean(r["mean_std_rel"] for r in select(recs, label=lab, setting=s.name)) for s in settings]
        rows.append([f"`{lab}`", *[_fmt(unit * c, 2) if c is not None else "–" for c in cells]])
    return _table(["method", *[f"{s.name} (R {s.acceleration:g})" if modality == "mri" else s.name
                               for s in settings]], rows)


def results_json(result: BenchmarkResult, targets: Sequence[Target], command: str) -> dict[str, Any]:
    p = result.preset
    return {
        "preset": p.name, "command": command,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "runtime_s": result.runtime_s, "meta": result.meta,
        "config": {
            **{k: v for k, v in dataclasses.asdict(p).items() if k not in ("runs", "mri_settings", "ct_settings")},
            "mri_settings": [dataclasses.asdict(s) for s in p.mri_settings],
            "ct_settings": [dataclasses.asdict(s) for s in p.ct_settings],
            "runs": [{**dataclasses.asdict(r), "hparams": dict(r.hparams)} for r in p.runs],
            "support_fraction": SUPPORT_FRACTION, "patch": PATCH, "z": Z95,
        },
        "targets": [dataclasses.asdict(t) for t in targets],
        "summary": summary_table([r for r in result.records], ("modality", "dataset", "setting", "label"),
                                 ("psnr", "ssim", "nmse", "nfe", "wall_s", "mean_std", "mean_std_rel", "spearman",
                                  "spearman_patch", "coverage", "ause")),
        "records": result.records,
        "sparsification": {f"{m}/{s}/{lab}": {"by_std": np.mean([c[0] for c in cs], 0).round(4).tolist(),
                                              "oracle": np.mean([c[1] for c in cs], 0).round(4).tolist()}
                           for (m, s, lab), cs in result.curves.items()},
        "skipped": result.skipped,
    }


def machine_description(device: torch.device) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cores} CPU cores ({platform.machine()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){gpu}")


def write_outputs(result: BenchmarkResult, out_dir: Path, command: str) -> list[Target]:
    """REPORT.md, results.json and the PNG figures into `out_dir`; returns the evaluated targets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = evaluate_targets(result.preset, result.records)
    figs = []
    for fname, title, fn in (
        ("quality_mri.png", "MRI quality per setting", lambda p: figure_quality(result, "mri", p)),
        ("quality_ct.png", "CT quality per setting", lambda p: figure_quality(result, "ct", p)),
        ("quality_vs_nfe.png", "Quality against NFE", lambda p: figure_nfe(result, p)),
        ("cost.png", "Time per slice and network fraction", lambda p: figure_cost(result, p)),
        ("calibration.png", "Uncertainty calibration", lambda p: figure_calibration(result, p)),
        ("examples_mri.png", "MRI examples", lambda p: figure_examples(result, "mri", p)),
        ("examples_ct.png", "CT examples", lambda p: figure_examples(result, "ct", p)),
    ):
        if fn(out_dir / fname):
            figs.append((title, fname))
    (out_dir / "results.json").write_text(json.dumps(json_safe(results_json(result, targets, command)), indent=1))
    (out_dir / "REPORT.md").write_text(render_report(result, targets, figs, command))
    return targets


def render_report(result: BenchmarkResult, targets: Sequence[Target], figures: Sequence[tuple[str, str]],
                  command: str) -> str:
    p = result.preset
    m = result.meta
    lines = [
        f"# Benchmark report — preset `{p.name}`",
        "",
        f"- command: `{command}`",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; runtime "
        f"{result.runtime_s / 60:.1f} min",
        f"- machine: {m.get('machine', '?')}; device `{m.get('device', '?')}`",
        f"- priors: {m.get('priors', '?')}; U-Nets: {m.get('unets', '?')}",
        f"- posterior samples per slice: {p.n_samples}; seeds: mask seed = case index, sampler seed 0",
        "",
        "## Targets",
        "",
        *[t.line() for t in targets],
        "",
    ]
    if m.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in m["notes"]], ""]
    if p.reductions:
        lines += ["## What this preset reduces", "", *[f"- {r}" for r in p.reductions], ""]
    lines += [
        "## Data and settings",
        "",
        f"- BrainWeb test subjects {', '.join(map(str, p.brainweb_subjects))}, {p.brainweb_slices} slice(s) each, "
        f"T1w, p99(|x|) = 1, 8 birdcage coils, complex k-space noise std {p.mri_noise_std} (as the U-Net's "
        "training data), "
        + (f"central {p.brainweb_kspace[0]} x {p.brainweb_kspace[1]} of k-space (lower resolution, whole head in view)"
           if p.brainweb_kspace else "full 217 x 181"),
        f"- real T1 brain (`fastmri_format/brain_t1_8ch_real.h5`): "
        + ("not used" if not p.real_t1 else "retrospective undersampling of its acquired lines"
           + (f", central {p.real_t1_kspace_crop[0]} x {p.real_t1_kspace_crop[1]} of k-space"
              if p.real_t1_kspace_crop else ", file target")),
        f"- real Poisson-undersampled files: {', '.join(p.poisson_files) or 'none'} (own sampling, no ground truth; "
        "ESPIRiT maps from their own fully sampled centre)",
        f"- coil maps of the retrospective cases: ESPIRiT from the central {CALIB_LINES} phase lines of the fully "
        "sampled data (a separate reference scan), shared by all masks of a slice: ESPIRiT needs >= 16 "
        "calibration lines and the fastMRI centre fractions give 5-14 at these sizes; the real T1 file has "
        "wrap-around (field of view smaller than the head) and uses 2 map sets",
        f"- head CT test slices {', '.join(map(str, p.ct_slices))}, "
        f"{'crop ' + 'x'.join(map(str, p.ct_size)) if p.ct_size else '256 x 256'}, noiseless parallel-beam "
        "line integrals (ASTRA)",
        "- MRI settings: " + "; ".join(f"{s.name} (centre {s.center_fraction}, "
                                       f"{'in' if s.in_distribution else 'out of'} distribution for the U-Net)"
                                       for s in p.mri_settings),
        "- CT settings: " + "; ".join(f"{s.name} ({s.views} views over {s.arc_degrees:g} deg)" for s in p.ct_settings),
        "- metrics: fastMRI convention (`recon.metrics`: data range = reference maximum, SSIM 7x7); CT on HU "
        f"clipped to [-1024, 2000] (data range {HU_RANGE:g})",
        f"- calibration on the object support (reference >= {100 * SUPPORT_FRACTION:g}% of its maximum); "
        f"patch statistics on {PATCH}x{PATCH} patches at least half inside it",
        "",
        "## Quality",
        "",
        "A count in parentheses: the method ran on that many cases only (probes); compare it on those cases.",
        "",
    ]
    for title, table in quality_tables(result):
        lines += [f"### {title}", "", table, ""]
    if select(result.records, setting="file"):
        lines += ["### Real Poisson-undersampled k-space (no ground truth)", "",
                  "Agreement with BART `pics` (2 ESPIRiT map sets, combined by root-sum-of-squares) after a "
                  "least-squares intensity match; `pics` is itself an l1-wavelet reconstruction, not ground truth.",
                  "", file_table(result), ""]
    on_cuda = str(m.get("device", "cpu")).startswith("cuda")
    peak = ("CUDA `max_memory_allocated` while the method ran" if on_cuda else
            "peak resident set size of the process while the method ran (VmHWM reset before each method; "
            "includes the loaded data and networks)")
    lines += ["## Cost", "", cost_table(result), "",
              "Peak memory: " + peak + "; +MiB: its increase over the memory in use when the method started "
              "(the method's working memory; on CPU a lower bound, since memory that earlier methods freed and the "
              "allocator kept is reused without raising the resident set). "
              "NFE: network evaluations per slice (all samples go through the network as one batch). Network time: "
              "share of the wall time spent inside the prior's network.", "",
              "## Uncertainty calibration", "", calibration_table(result), "",
              "Mean std: MRI in % of the reference maximum, CT in HU. Coverage: fraction of support pixels whose "
              "|mean - reference| <= 1.96 std (0.95 if calibrated and Gaussian). AUSE: area between the "
              "sparsification curve (remove largest-std pixels first) and the oracle (largest-error first), "
              "both normalised to start at 1; 0 is a perfect ranking.", "",
              ]
    for mod, unit in (("mri", "% of the reference maximum"), ("ct", "HU")):
        t = std_table(result, mod)
        if t:
            lines += [f"### Mean posterior std per setting, {mod.upper()} ({unit})", "", t, ""]
    if figures:
        lines += ["## Figures", ""]
        for title, fname in figures:
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    if result.skipped:
        uniq = list(dict.fromkeys(s.split(" on ")[0] + " — " + s.split(": ", 1)[-1] for s in result.skipped))
        lines += ["## Skipped", "", *[f"- {s}" for s in uniq], ""]
    lines += ["## Reproduce", "", "```", command, "```", "",
              "The `full` preset (all 24 CT test slices at 256 x 256, 4 BrainWeb slices per subject, "
              "the real T1 at 320 x 256, every solver at its default NFE on every case, sweeps dds 10/20/50/100, "
              "projection 100/500/1000/2000, ccdf 10/20/40) needs a GPU or a long run:", "",
              "```", "recon benchmark --preset full --device cuda --out benchmarks/results/full", "```", ""]
    return "\n".join(lines)
