"""Test data the benchmark reads: fully sampled MRI slices (BrainWeb, the real T1), prospectively undersampled
k-space files, and head-CT slices."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from operators.fft import fft2c, ifft2c
from recon.benchmark.errors import BenchmarkError
from recon.data.brainweb import SHARED_DATA, DataNotFoundError
from recon.data.io import FastMRIHeader, center_crop, default_header


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
