"""Image pools for training priors: whole images from BrainWeb, Colin27, head CT or fastMRI-layout files.

Sources are the names of ``recon train-prior --data``, described in `recon.commands.train_prior`:
brainweb (`brainweb_pool`), colin27 (`colin27_pool`), ct (`recon.data.ct_slices`), fastmri:DIR and
fastmri-espirit:DIR (`fastmri_pool`); `build_pool` assembles them into one pool.

An `ImagePool` draws augmented random patches (`sample_patches`); it is the patch source that
`priors.training.run_train_prior` expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from recon.data.brainweb import (BRAINWEB_TRAIN, COLIN27_ORIENTATIONS, CONTRASTS, brainweb_slices, colin27_slices,
                                 load_brainweb_labels, normalize_p99, random_smooth_phase)
from recon.data.ct_slices import ct_slices

PHASE_EXTENT = 256.0  # random smooth phase of patches: the slope of a 256-pixel image


class TrainingDataError(ValueError):
    """The requested training data cannot be assembled (unknown source, empty folder, mixed kinds)."""


@dataclass
class ImagePool:
    """Whole training images of possibly different sizes.

    Attributes:
        images: list of ``[H, W]`` arrays, complex64 (complex priors) or float32 (real priors),
            already in the prior's scale.
        complex_valued: whether samples are complex (2 channels) and get a random smooth phase.
        description: what the pool holds (goes into the model card).
    """

    images: list[np.ndarray]
    complex_valued: bool
    description: str

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int, patch: int, rng: np.random.Generator) -> torch.Tensor:
        """Augmented random patches, complex64 or float32 ``[batch, patch, patch]`` (`sample_patches`)."""
        return sample_patches(self, batch, patch, rng)


# ---------------------------------------------------------------------------
# patches
# ---------------------------------------------------------------------------
def _crop_or_pad(img: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``[patch, patch]`` crop of ``img`` ``[H, W]``, zero-padded at the end where it is smaller."""
    h, w = img.shape
    if h < patch or w < patch:
        img = np.pad(img, ((0, max(patch - h, 0)), (0, max(patch - w, 0))))
        h, w = img.shape
    i = int(rng.integers(0, h - patch + 1))
    j = int(rng.integers(0, w - patch + 1))
    return img[i: i + patch, j: j + patch]


def sample_patches(pool: ImagePool, batch: int, patch: int, rng: np.random.Generator,
                   augment: bool = True) -> torch.Tensor:
    """Random augmented patches: complex64 or float32 ``[batch, patch, patch]``.

    Augmentation: random image, random crop, flips, 90-degree rotations and (complex pools) a
    random smooth phase whose slope is that of a 256-pixel image.
    """
    out = []
    for _ in range(batch):
        p = _crop_or_pad(pool.images[int(rng.integers(0, len(pool)))], patch, rng)
        if augment:
            p = np.rot90(p, k=int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if pool.complex_valued:
                p = p * np.exp(1j * random_smooth_phase((patch, patch), rng, extent=PHASE_EXTENT))
        out.append(np.ascontiguousarray(p))
    arr = np.stack(out)
    return torch.from_numpy(arr.astype(np.complex64 if pool.complex_valued else np.float32))


# ---------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------
def brainweb_pool(root: Path, subjects: Sequence[int], rng: np.random.Generator, n_slices: int) -> list[np.ndarray]:
    """Simulated complex slices (p99 = 1) of every subject and contrast, each ``[H, W]`` complex64."""
    images = []
    for s in subjects:
        labels = load_brainweb_labels(s, root)
        for c in CONTRASTS:
            images.extend(brainweb_slices(s, c, rng, n_slices=n_slices, root=root, labels=labels))
    return images


def colin27_pool(root: Path, n_slices: int) -> list[np.ndarray]:
    """Colin27 magnitude slices of every orientation, each ``[H, W]`` complex64 (zero phase)."""
    return [s.astype(np.complex64) for o in COLIN27_ORIENTATIONS for s in colin27_slices(o, n_slices, root)]


def read_fastmri_targets(path: Path) -> np.ndarray:
    """Magnitude target images of one fastMRI-layout file, float32 ``[S, H, W]``.

    ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc`` (single-coil) when present,
    else the root-sum-of-squares of the centred inverse FFT of ``kspace``.
    """
    import h5py

    with h5py.File(path, "r") as f:
        for key in ("reconstruction_rss", "reconstruction_esc"):
            if key in f:
                return np.asarray(f[key], dtype=np.float32)
        if "kspace" not in f:
            raise TrainingDataError(f"{path} has neither a reconstruction nor 'kspace'")
        k = np.asarray(f["kspace"])
    k = k[:, None] if k.ndim == 3 else k  # single coil -> [S, 1, H, W]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.sqrt((np.abs(img) ** 2).sum(axis=1)).astype(np.float32)


def read_fastmri_espirit(path: Path, calib_width: int = 24) -> np.ndarray:
    """ESPIRiT-combined complex images of one fastMRI-layout file, complex64 ``[S, rH, rW]``.

    Per slice: one ESPIRiT map set from the fully sampled centre (`operators.espirit.espirit_maps`),
    coil combination ``sum_c conj(S_c) ifft2c(k_c)``, centre crop to the header's recon size
    (removes readout oversampling), as fastMRI crops its targets. A single-coil file's image is
    ``ifft2c(k)`` itself (its one coil is the object, as `recon reconstruct` takes it).
    """
    from operators.espirit import espirit_maps
    from operators.fft import ifft2c, sense_combine
    from recon.data.io import center_crop, load_fastmri, recon_crop_shape

    out = []
    with load_fastmri(path) as vol:
        crop = recon_crop_shape(vol.header)
        for i in range(vol.kspace.shape[0]):
            k = torch.from_numpy(np.asarray(vol.kspace[i])).to(torch.complex64)
            img = sense_combine(ifft2c(k), espirit_maps(k, calib_width=calib_width)) if vol.multicoil else ifft2c(k)
            out.append(center_crop(img, crop).numpy())
    return np.stack(out).astype(np.complex64)


def fastmri_pool(folder: Path, espirit: bool = False) -> list[np.ndarray]:
    """p99-normalised images of every ``*.h5`` under ``folder``: RSS targets (real, phase added by
    augmentation) or, with ``espirit``, ESPIRiT-combined complex images (their own phase)."""
    files = sorted(Path(folder).rglob("*.h5"))
    if not files:
        raise TrainingDataError(f"no *.h5 files under {folder}")
    read = read_fastmri_espirit if espirit else read_fastmri_targets
    return [s.astype(np.complex64) for f in files for s in normalize_p99(read(f))]


def parse_sources(data: str) -> list[str]:
    """``"brainweb, colin27"`` -> ``["brainweb", "colin27"]`` (the ``--data`` flag)."""
    return [s.strip() for s in data.split(",") if s.strip()]


def _source_images(src: str, root: Path, rng: np.random.Generator, n_slices: int
                   ) -> tuple[list[np.ndarray], bool, str]:
    """(images, complex-valued, description) of one source."""
    if src == "brainweb":
        imgs = brainweb_pool(root, BRAINWEB_TRAIN, rng, n_slices)
        return imgs, True, (f"BrainWeb train subjects {BRAINWEB_TRAIN} x T1w/T2w/PDw x {n_slices} axial slices "
                            f"(simulated complex, p99-normalised): {len(imgs)} images")
    if src == "colin27":
        imgs = colin27_pool(root, n_slices)
        return imgs, True, (f"Colin27 axial/coronal/sagittal x {n_slices} slices (magnitude + random smooth phase, "
                            f"p99-normalised): {len(imgs)} images")
    if src == "ct":
        imgs = list(ct_slices("train", root))
        return imgs, False, f"head CT train slices 0..71, x = max((HU+1000)/1000, 0): {len(imgs)} images"
    if src.startswith(("fastmri:", "fastmri-espirit:")):
        kind, folder = src.split(":", 1)
        espirit = kind == "fastmri-espirit"
        imgs = fastmri_pool(Path(folder), espirit=espirit)
        what = "ESPIRiT-combined complex images" if espirit else "RSS targets"
        return imgs, True, f"fastMRI folder {folder} ({what} + random smooth phase, p99-normalised): {len(imgs)} images"
    raise TrainingDataError(f"unknown data source '{src}'; use brainweb, colin27, ct, fastmri:DIR "
                            "or fastmri-espirit:DIR")


def build_pool(sources: Sequence[str], root: Path, seed: int, n_slices: int) -> ImagePool:
    """Assemble the training images of the requested sources (deterministic given ``seed``)."""
    rng = np.random.default_rng([seed, 1])
    images: list[np.ndarray] = []
    kinds: set[bool] = set()
    desc = []
    for src in sources:
        imgs, complex_valued, what = _source_images(src, root, rng, n_slices)
        images.extend(imgs)
        kinds.add(complex_valued)
        desc.append(what)
    if len(kinds) != 1:
        raise TrainingDataError("cannot mix real (ct) and complex (MRI) sources in one prior")
    return ImagePool(images, kinds.pop(), "; ".join(desc))
