"""fastMRI-like multi-coil files from BrainWeb anatomy: what `recon reconstruct` meets on real scans.

Each file holds fully sampled k-space in the fastMRI brain layout: readout oversampled 2x (the image
is centred in a field of view twice as long along the readout, as fastMRI's 640 x 320 brain files),
16 birdcage coils, complex Gaussian noise that is correlated between coils (a coil covariance with
unequal coil noise levels and neighbour correlation), a `reconstruction_rss` target at the recon size
(RSS of the noisy fully sampled coil images, cropped: fastMRI's convention), and the header of a
fastMRI file. Images are 1 mm BrainWeb slices (217 x 181) in a 224 x 192 mm recon field of view; with
``pixel_mm`` < 1 the same anatomy at finer pixels (0.7 mm: 310 x 259 in 320 x 272, fastMRI's brain resolution).

    recon simulate fastmri-like --out DATA_DIR --subjects 51 52 53 54        # test files
    recon simulate fastmri-like --out DATA_DIR --subjects 49 50              # validation files
    recon simulate fastmri-like --out DATA_DIR --subjects 49 50 --pixel-mm 0.7   # finer pixels

`write_images` does the same for any complex images (other anatomy, other recon sizes, other coil counts).
The files are generated on demand from ../shared/data (never shipped: they derive from BrainWeb).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from operators.fft import fft2c

RECON_SHAPE = (224, 192)


@dataclass(frozen=True)
class FastMRILikeSpec:
    """How a file is simulated.

    Attributes:
        contrast: BrainWeb contrast (T1w, T2w, PDw).
        n_slices: slices per file (evenly spaced through the brain).
        n_coils: receive coils.
        oversample: readout oversampling factor (2 as fastMRI brain and knee files; 1 = none).
        noise_rel: noise std per real/imag part (the same in k-space and in each coil image: orthonormal
            FFT) relative to the 99th percentile of the noiseless RSS image. The default 0.0147 is what the
            real 8-coil T1 file shows (noise std 7.0 estimated by `recon.problems.noise`, RSS p99 476).
        correlation: noise correlation between neighbouring coils (0 = independent coils).
        seed: seeds anatomy texture, phase, coil noise.
        pixel_mm: in-plane pixel size of the slices (1 mm thick); the recon size follows (`recon_size_of`).
    """

    contrast: str = "T1w"
    n_slices: int = 8
    n_coils: int = 16
    oversample: int = 2
    noise_rel: float = 0.0147
    correlation: float = 0.2
    seed: int = 0
    pixel_mm: float = 1.0


def coil_covariance(n_coils: int, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """A realistic noise covariance [C, C]: coil noise std between 0.8 and 1.25, correlation decaying
    with the distance between coils on the ring (``correlation**d``), Hermitian positive definite."""
    idx = np.arange(n_coils)
    d = np.minimum(np.abs(idx[:, None] - idx[None, :]), n_coils - np.abs(idx[:, None] - idx[None, :]))
    corr = np.where(d == 0, 1.0, correlation ** d.astype(np.float64))
    gains = rng.uniform(0.8, 1.25, n_coils)
    cov = corr * gains[:, None] * gains[None, :]
    return cov.astype(np.complex128)


def correlated_noise(shape: tuple[int, ...], cov: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Complex noise [..., C, H, W] whose coil covariance is ``std**2 * cov`` per real/imag part."""
    c = cov.shape[0]
    white = rng.standard_normal((*shape, 2)).astype(np.float64)
    white = white[..., 0] + 1j * white[..., 1]
    chol = np.linalg.cholesky(cov)
    moved = np.moveaxis(white, -3, -1)                      # [..., H, W, C]
    return std * np.moveaxis(moved @ chol.T, -1, -3).astype(np.complex64) if c else white


def recon_size_of(image_shape: tuple[int, int]) -> tuple[int, int]:
    """The recon size of slices [H, W]: each side rounded up to a multiple of 16 (1 mm BrainWeb: 224 x 192)."""
    return tuple(-(-n // 16) * 16 for n in image_shape)


def pad_to_recon(images: torch.Tensor) -> torch.Tensor:
    """Centre BrainWeb slices in the recon field of view (`recon_size_of`): complex [S, 217, 181] -> [S, 224, 192]
    at 1 mm."""
    h, w = recon_size_of(tuple(images.shape[-2:]))
    ph, pw = h - images.shape[-2], w - images.shape[-1]
    return torch.nn.functional.pad(images, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def acquire(x: torch.Tensor, maps: torch.Tensor, noise_rel: float, correlation: float, oversample: int,
            rng: np.random.Generator) -> dict:
    """Fully sampled noisy multi-coil k-space of recon-size images, the readout oversampled.

    Args:
        x: complex [S, H, W] images in the recon field of view (224 x 192 for BrainWeb files).
        maps: complex [C, oversample * H, W] coil maps.
        noise_rel, correlation, oversample: as `FastMRILikeSpec`.
        rng: draws the coil covariance, then the noise.

    Returns:
        ``{"kspace": complex64 [S, C, oversample * H, W], "noise_std": float (per real/imag part, rms over
        coils), "noise_std_per_coil": [C], "coil_cov": [C, C]}``.
    """
    h = x.shape[-2]
    oh = h * oversample
    x = torch.nn.functional.pad(x, (0, 0, (oh - h) // 2, oh - h - (oh - h) // 2))
    coil_images = maps * x.unsqueeze(-3)
    k = fft2c(coil_images).numpy()
    std = noise_rel * float(np.percentile(coil_images.abs().pow(2).sum(-3).sqrt().numpy(), 99))
    cov = coil_covariance(maps.shape[0], correlation, rng)
    k = (k + correlated_noise(k.shape, cov, std, rng)).astype(np.complex64)
    noise_per_coil = std * np.sqrt(np.real(np.diag(cov)))
    return {"kspace": k, "noise_std": float(np.sqrt(np.mean(noise_per_coil**2))),
            "noise_std_per_coil": noise_per_coil, "coil_cov": cov}


def header_for(oversample: int, recon_shape: tuple[int, int] = RECON_SHAPE):
    """The fastMRI header of a file with this readout oversampling and recon size [H, W]."""
    from recon.data.io import FastMRIHeader
    h, w = recon_shape
    return FastMRIHeader((h * oversample, w, 1), (h, w, 1), 0, w)


def simulate_images(x: torch.Tensor, spec: FastMRILikeSpec, rng: np.random.Generator) -> dict:
    """A fastMRI-like acquisition of complex images [S, H, W] (the recon field of view): k-space complex64
    [S, C, oversample * H, W] from ``spec.n_coils`` birdcage coils, target float32 [S, H, W] (fastMRI's RSS
    convention) and the true noise (`acquire`'s keys)."""
    from recon.data.io import rss_target
    from recon.data.simulate.mri import birdcage_maps

    h, w = x.shape[-2:]
    maps = birdcage_maps(spec.n_coils, (h * spec.oversample, w), radius=1.5)
    out = acquire(x, maps, spec.noise_rel, spec.correlation, spec.oversample, rng)
    k, header = out["kspace"], header_for(spec.oversample, (h, w))
    target = torch.stack([rss_target(torch.from_numpy(k[i]), header) for i in range(k.shape[0])]).numpy()
    return {**out, "target": target.astype(np.float32)}


def simulate_volume(subject: int, spec: FastMRILikeSpec, root: Path | str | None = None) -> dict:
    """k-space complex64 [S, C, oversample * 224, 192], target float32 [S, 224, 192] (at 1 mm; `recon_size_of`
    otherwise), and the true noise std."""
    from recon.data.brainweb import SHARED_DATA, brainweb_slices

    rng = np.random.default_rng([spec.seed, subject])
    imgs = brainweb_slices(subject, spec.contrast, rng, n_slices=spec.n_slices, root=root or SHARED_DATA,
                           pixel_mm=spec.pixel_mm)
    return simulate_images(pad_to_recon(torch.from_numpy(imgs)), spec, rng)


def write_volume(path: Path, subject: int, spec: FastMRILikeSpec, root: Path | str | None = None) -> Path:
    """Simulate one subject and write it in the fastMRI layout (attrs record the spec and the true noise)."""
    import json

    from recon.data.io import write_fastmri

    v = simulate_volume(subject, spec, root)
    attrs = {"acquisition": f"AX{spec.contrast.upper()}_SIMULATED", "patient_id": f"brainweb{subject:02d}-sim",
             "source": f"BrainWeb subject {subject}, simulated by diffrecon (recon.data.simulate.fastmri_like)",
             "simulation": json.dumps(asdict(spec)), "true_noise_std": v["noise_std"]}
    return write_fastmri(path, v["kspace"], target=v["target"], recon_size=tuple(v["target"].shape[-2:]), attrs=attrs)


def write_images(path: Path, images: np.ndarray, spec: FastMRILikeSpec, attrs: dict, seed: int = 0) -> Path:
    """Simulate a fastMRI-like acquisition of complex images [S, H, W] (`simulate_images`; the recon size is
    H x W) and write it in the fastMRI layout; ``attrs`` (acquisition, patient_id, source) join the spec and the
    true noise std in the file's attributes."""
    import json

    from recon.data.io import write_fastmri

    x = torch.from_numpy(np.asarray(images, dtype=np.complex64))
    v = simulate_images(x, spec, np.random.default_rng([spec.seed, seed]))
    attrs = {**attrs, "simulation": json.dumps(asdict(spec)), "true_noise_std": v["noise_std"]}
    return write_fastmri(path, v["kspace"], target=v["target"], recon_size=tuple(x.shape[-2:]), attrs=attrs)


def write_single_coil(src: Path, dst: Path) -> Path:
    """The single-coil version of a fully sampled multi-coil fastMRI file (fastMRI's ``singlecoil`` layout):
    per slice, the coil images combined with ESPIRiT maps of the whole slice (one map set, no eigenvalue crop,
    on the oversampled grid), ``sum_c conj(s_c) c_c``, noise included; k-space [S, H, W] of that image and
    ``reconstruction_esc`` = its magnitude cropped to the recon size.

    A virtual coil of uniform sensitivity: like fastMRI's emulated single coil (a linear combination of the
    array's coils) but without the shading its fixed combination weights leave. Attributes and header are kept.
    """
    import h5py

    from operators.espirit import espirit
    from operators.fft import ifft2c, sense_combine
    from recon.data.io import center_crop, load_fastmri, write_fastmri

    with load_fastmri(src) as vol:
        if not vol.multicoil:
            raise ValueError(f"{src}: already single-coil")
        recon = vol.header.recon_size[:2]
        kspace, target = [], []
        for i in range(vol.n_slices):
            k = torch.as_tensor(vol.kspace[i]).to(torch.complex64)
            maps = espirit(k, calib_width=24, crop=0.0, n_maps=1).maps[0]
            image = sense_combine(ifft2c(k), maps)
            kspace.append(fft2c(image).numpy())
            target.append(center_crop(image.abs(), recon).numpy())
    with h5py.File(src) as f:
        attrs = {k: v for k, v in f.attrs.items() if k not in ("max", "norm")}
    attrs["source"] = f"{src.name}, coils combined into one (recon.data.simulate.fastmri_like.write_single_coil)"
    return write_fastmri(dst, np.stack(kspace), target=np.stack(target).astype(np.float32), recon_size=recon,
                         attrs=attrs)
