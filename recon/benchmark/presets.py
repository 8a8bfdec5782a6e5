"""Benchmark presets as data: acquisition settings, method configurations, and the `quick` / `targets` / `full`
presets (`get_preset` looks one up by name)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recon.benchmark.errors import BenchmarkError
from recon.methods import POSTERIOR_METHODS
from recon.problems.ct import CTSpec
from recon.problems.mri import MaskSpec


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
        "far below their defaults (1000 / 600 / 200): these rows show cost and trend, not converged quality, "
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
        "`score-ald` (600 NFE) and `dps` (200 NFE) at their defaults on the first case of random-4x and "
        "random-8x only (cost and the std ordering, not a quality ranking)",
        "Poisson files: baselines and `dds` only",
    ),
)

PRESETS: dict[str, Preset] = {"quick": QUICK, "targets": TARGETS, "full": FULL}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise BenchmarkError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
