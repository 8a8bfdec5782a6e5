"""What one `recon reconstruct` run produces per input: its settings (`ReconstructConfig`), each
method's per-slice outputs (`MethodVolume`) and the whole file's result (`VolumeResult`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from recon.problems.ct import CTSpec
from recon.problems.mri import MaskSpec
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
        magnitude: MRI means of image estimates: "rss" (the fastMRI target they predict, with the RSS noise
            floor: `MRIProblem.rss_estimate`) or "image" (|x|). Samples and std are always |x|.
        primary: the primary method (None = the first of `solvers`).
        save_samples, save_maps: also store the posterior samples / coil maps.
        export: subset of {"nifti", "dicom"}.
        quiet: no progress bars.
        prior_name: recorded in the outputs ("" = the default prior of the file's modality, named in `weights`).
        weights: per modality, the prior and U-Net a run loads with their sha256 (`{"mri": {"prior": NAME,
            "prior_sha256": ..., "unet": NAME, "unet_sha256": ...}}`): recorded, and part of `settings_hash`, so
            new weights under an old name redo a file instead of keeping its old outputs.
        hparams: posterior methods' hyper-parameter overrides, e.g. ``{"dds": {"eta": 0.85}}`` (`--set`).
        settings_hash: digest of every setting that changes results (recorded; reruns compare it).
    """

    solvers: list[str]
    mask: MaskSpec = field(default_factory=MaskSpec)
    ct: CTSpec = field(default_factory=CTSpec)
    slices: tuple[int | None, int | None] | None = None
    device: str = "cpu"
    n_maps: int | None = None
    noise_std: float | None = None
    magnitude: str = "rss"
    primary: str | None = None
    save_samples: bool = False
    save_maps: bool = False
    export: tuple[str, ...] = ()
    quiet: bool = False
    prior_name: str = ""
    weights: dict[str, dict[str, str | None]] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings_hash: str = ""


class SliceError(ValueError):
    """One slice (or one method on one slice) could not be reconstructed; the message says why."""


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
    fits: list[float] = field(default_factory=list)   # per slice: `recon.methods.prior_fit` (posterior methods)
    wall: float = 0.0
    network: float = 0.0
    nfe: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)

    def add(self, index: int, post: Posterior, display: Callable[[torch.Tensor], torch.Tensor],
            keep_samples: bool, estimate: Callable[[torch.Tensor], torch.Tensor] | None = None,
            fit: float | None = None) -> None:
        """Record slice `index`: the mean through `estimate` (default `display`), the samples and their std
        through `display`, the prior's fit to the samples (`recon.methods.prior_fit`); raises `SliceError` (and
        records nothing) for non-finite outputs."""
        mean = (estimate or display)(post.mean).cpu().numpy()
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
        if fit is not None:
            self.fits.append(fit)
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
