"""Benchmark cases: a data source under one acquisition setting, as a reconstruction problem with its reference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from operators.espirit import espirit_maps
from operators.fft import ifft2c, rss
from operators.mri import MultiCoilMRI
from recon.benchmark.errors import BenchmarkError
from recon.benchmark.presets import CTSetting, MRISetting
from recon.benchmark.sources import CTSource, FileSampledSource, MRISource
from recon.data.io import center_crop, default_header
from recon.data.masks import make_mask
from recon.problems.ct import CTProblem, simulated_ct_problem
from recon.problems.mri import MaskSpec, MRIProblem, prepare_mri_slice, reduce_readout, sampled_pattern


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
    # over the acquired lines, as when the curated tables were made (`recon reconstruct` uses fastMRI's span)
    m = make_mask(setting.kind, (h, w), setting.acceleration, setting.center_fraction, seed=seed,
                  acquired=(left, right), span="acquired")
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
    (maps then come from the file's own fully sampled centre; k-space brought to unit intensity as `recon
    reconstruct` does, so that the noise-aware weights, which take the estimated noise in that scale, apply)."""
    if isinstance(src, FileSampledSource):
        from recon.pipeline.run import intensity_scale

        k = src.kspace / intensity_scale(src.kspace)
        p = prepare_mri_slice(k, default_header(src.kspace.shape), MaskSpec(), device=device)
        return Case("mri", src.dataset, src.name, "file", index, p, None, _mri_display(p), p.acceleration,
                    src.reference)
    assert setting is not None
    p = retrospective_problem(src, setting, index, device)
    ref = None if p.reference is None else p.reference.cpu().numpy()
    return Case("mri", src.dataset, src.name, setting.name, index, p, ref, _mri_display(p), p.acceleration)


def ct_case(src: CTSource, setting: CTSetting, index: int, device: torch.device) -> Case:
    p = simulated_ct_problem(src.hu, src.pixel_mm, setting.spec(seed=index), device=str(device))
    return Case("ct", src.dataset, src.name, setting.name, index, p, src.hu, p.to_hu, setting.acceleration)
