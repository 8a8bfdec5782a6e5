"""Training the U-Net baselines (``recon train-unet``): fastMRI's U-Net for brain MRI and a CT U-Net.

Tasks
-----
``brain-mri``  fastMRI's in-distribution setting (Zbontar et al. 2018): random 1D masks at 4x
               (centre fraction 0.08) and 8x (0.04), drawn afresh for every example. Data: BrainWeb
               train subjects (`recon.data.brainweb.BRAINWEB_TRAIN`), T1w/T2w/PDw, complex slices
               reduced to 1.5 mm by cropping k-space (217x181 -> 144x120, `BRAIN_SHAPE`), 8 birdcage
               coils, complex Gaussian k-space noise (`BRAIN_NOISE`). Input: zero-filled RSS,
               instance-normalised; target: RSS of the fully sampled coil images, normalised with the
               input's mean and std (fastMRI ``UnetDataTransform``); L1 loss, as fastMRI.
               With ``fastmri_like`` > 0 that fraction of the steps draws from the native-resolution path
               `recon reconstruct` meets instead (`recon.data.simulate.fastmri_like`): 1 mm slices in a
               224 x 192 recon field of view, readout oversampled 2x, 16 birdcage coils, correlated coil
               noise at 0.5-2x the real T1 file's level; input and target cropped to the recon size as
               fastMRI does. ``init`` starts from a trained U-Net file (fine-tuning).
``head-ct``    60-view parallel-beam sparse view on head-CT train slices 0..71 (256x256, 363 detector
               bins): input the FBP in the prior's scale (water = 1), output ``fbp + net(fbp)``; the
               target is ``max((HU + 1000) / 1000, 0)``. Sinograms are noiseless or carry Poisson noise
               (`CT_PHOTONS`); random 128x128 patches with flips and 90-degree rotations (both map the
               60 equispaced views onto themselves, so the augmented FBP is still an exact FBP).

The slices are simulated once into ``--cache`` (npz) so training never re-simulates. Adam, L1,
learning rate ``lr`` until 80 % of the run (by steps or by ``--max-minutes``, whichever comes first)
and ``lr / 10`` after; checkpoint every few minutes with the generator states (``--resume`` continues
the same sequence); ``loss.csv`` with the training loss and, at each checkpoint, validation PSNR
(brain: subjects 49, 50 at 4x; CT: slices 72..83). ``--export`` writes the bundled single-file
weights (see `recon.baselines.unet`) and reports its sha256. The loop (resume, checkpoints, log,
budget) is `priors.fit.fit`; settings are a `UNetTrainingConfig`, built from the flags by
`recon.commands.train_unet`.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from operators.fft import fft2c, ifft2c, rss
from priors.fit import CHECKPOINT_NAME, FitConfig, StepInfo, StepLog, fit
from priors.networks.fastmri_unet import Unet, UnetConfig, normalize_unet_input
from priors.registry import write_weights
from recon.baselines.unet import UNET_FORMAT, UNET_KIND, load_unet, mri_unet_image, unet_forward
from recon.data.brainweb import SHARED_DATA
from recon.data.masks import make_mask
from recon.metrics import psnr

TASKS = ("brain-mri", "head-ct")
VALIDATION_COLUMNS = ("val_psnr", "val_psnr_input")
BRAIN_SHAPE = (144, 120)       # 1.5 mm over BrainWeb's 217 x 181 mm field of view
BRAIN_COILS = 8
BRAIN_NOISE = 0.002            # std of the real and imaginary k-space noise (images have p99 |x| = 1)
BRAIN_CONTRASTS = ("T1w", "T2w", "PDw")
BRAIN_SETTINGS = ((4.0, 0.08), (8.0, 0.04))   # (acceleration, centre fraction), fastMRI challenge
FASTMRI_LIKE_COILS = 16
FASTMRI_LIKE_NOISE = (0.5, 2.0)   # noise level drawn log-uniformly in this range x FastMRILikeSpec.noise_rel
FASTMRI_LIKE_CORRELATION = (0.0, 0.3)
CT_VIEWS = 60
CT_PIXEL_MM = 0.957            # head_ct.h5 in-plane spacing
CT_PHOTONS = (None, 1e6, 1e5)  # incident photons per bin of the training sinograms (None: noiseless)


# ---------------------------------------------------------------------------
# brain MRI data
# ---------------------------------------------------------------------------
def fourier_crop(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Lower the resolution by keeping the centre ``shape`` of k-space: complex [..., H, W] -> [..., h, w].

    Same field of view, intensities kept (the orthonormal FFT is rescaled by sqrt(hw / HW)).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.complex64)
    h, w = x.shape[-2:]
    top, left = h // 2 - shape[0] // 2, w // 2 - shape[1] // 2
    k = fft2c(x)[..., top: top + shape[0], left: left + shape[1]]
    return (ifft2c(k) * math.sqrt(shape[0] * shape[1] / (h * w))).numpy()


def brain_images(subjects: Sequence[int], n_slices: int, seed: int, contrasts: Sequence[str] = BRAIN_CONTRASTS,
                 shape: tuple[int, int] = BRAIN_SHAPE, root: Path | None = None) -> np.ndarray:
    """Simulated complex BrainWeb slices at reduced size: complex64 [len(subjects) * len(contrasts) * n_slices, h, w].

    Ordered subject-major, then contrast, then slice; each slice has p99(|x|) = 1 after the crop.
    Deterministic for ``seed`` (one generator per subject and contrast).
    """
    from recon.data.brainweb import brainweb_slices, load_brainweb_labels, normalize_p99

    out = []
    for s in subjects:
        labels = load_brainweb_labels(s, root or SHARED_DATA)
        for ci, c in enumerate(contrasts):
            rng = np.random.default_rng([seed, s, ci])
            full = brainweb_slices(s, c, rng, n_slices=n_slices, labels=labels, normalize=False)
            out.append(normalize_p99(fourier_crop(full, shape)))
    return np.concatenate(out).astype(np.complex64)


def brain_kspace(images: torch.Tensor, maps: torch.Tensor, noise_std: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Fully sampled multi-coil k-space ``F(S_c x) + n``: complex [B, H, W] -> complex64 [B, C, H, W]."""
    k = fft2c(maps * images.unsqueeze(-3))
    if noise_std > 0:
        n = torch.randn(*k.shape, 2, generator=generator, device="cpu" if generator is None else generator.device).to(k.device)
        k = k + noise_std * torch.view_as_complex(n)
    return k.to(torch.complex64)


def random_masks(n: int, width: int, rng: np.random.Generator,
                 settings: Sequence[tuple[float, float]] = BRAIN_SETTINGS) -> torch.Tensor:
    """``n`` fastMRI random 1D masks, each with a setting drawn from ``settings``: float32 [n, W]."""
    rows = []
    for _ in range(n):
        acc, cf = settings[int(rng.integers(len(settings)))]
        rows.append(make_mask("random", (1, width), acc, cf, seed=int(rng.integers(2**31 - 1))).mask)
    return torch.stack(rows)


def zero_filled_and_target(kspace: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(zero-filled RSS, fully sampled RSS), both real [B, H, W], from k-space [B, C, H, W] and masks [B, W]."""
    zf = rss(ifft2c(kspace * masks[:, None, None, :]))
    return zf, rss(ifft2c(kspace))


def fastmri_like_images(subjects: Sequence[int], n_slices: int, seed: int,
                        contrasts: Sequence[str] = BRAIN_CONTRASTS, root: Path | None = None) -> np.ndarray:
    """1 mm BrainWeb slices in the fastMRI-like recon field of view: complex64 [S * contrasts * n_slices, 224, 192],
    p99(|x|) = 1, ordered subject, contrast, slice; deterministic for ``seed``."""
    from recon.data.brainweb import brainweb_slices, load_brainweb_labels
    from recon.data.simulate.fastmri_like import pad_to_recon

    out = []
    for s in subjects:
        labels = load_brainweb_labels(s, root or SHARED_DATA)
        for ci, c in enumerate(contrasts):
            rng = np.random.default_rng([seed, s, ci, 1])
            imgs = brainweb_slices(s, c, rng, n_slices=n_slices, labels=labels)
            out.append(pad_to_recon(torch.from_numpy(imgs)).numpy())
    return np.concatenate(out).astype(np.complex64)


@functools.lru_cache(maxsize=1)
def _fastmri_like_maps() -> torch.Tensor:
    """The 16 birdcage maps of the fastMRI-like files, complex [16, 448, 192] (computed once; read-only use)."""
    from recon.data.simulate.fastmri_like import RECON_SHAPE, FastMRILikeSpec
    from recon.data.simulate.mri import birdcage_maps

    return birdcage_maps(FASTMRI_LIKE_COILS, (RECON_SHAPE[0] * FastMRILikeSpec().oversample, RECON_SHAPE[1]),
                         radius=1.5)


def fastmri_like_pairs(images: torch.Tensor, rng: np.random.Generator,
                       settings: Sequence[tuple[float, float]] = BRAIN_SETTINGS,
                       noise_rel: float | None = None, correlation: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(zero-filled RSS, fully sampled RSS), real [B, 224, 192], of fastMRI-like acquisitions of ``images``
    (complex [B, 224, 192]): readout oversampled 2x, 16 coils, correlated noise (level and correlation drawn
    from `FASTMRI_LIKE_NOISE` / `FASTMRI_LIKE_CORRELATION` unless given), random masks from ``settings``;
    both images cropped to the recon size as fastMRI's `reconstruction_rss`."""
    from recon.data.io import center_crop
    from recon.data.simulate.fastmri_like import RECON_SHAPE, FastMRILikeSpec, acquire

    spec = FastMRILikeSpec()
    if noise_rel is None:
        noise_rel = spec.noise_rel * float(np.exp(rng.uniform(*np.log(FASTMRI_LIKE_NOISE))))
    if correlation is None:
        correlation = float(rng.uniform(*FASTMRI_LIKE_CORRELATION))
    k = torch.from_numpy(acquire(images, _fastmri_like_maps(), noise_rel, correlation, spec.oversample, rng)["kspace"])
    masks = random_masks(len(images), k.shape[-1], rng, settings)
    zf, target = zero_filled_and_target(k, masks)
    return center_crop(zf, RECON_SHAPE), center_crop(target, RECON_SHAPE)


def brain_eval_cases(subjects: Sequence[int], n_slices: int, acceleration: float, center_fraction: float,
                     seed: int = 1234, contrasts: Sequence[str] = BRAIN_CONTRASTS,
                     root: Path | None = None) -> dict[str, Any]:
    """Held-out evaluation data: every subject with every contrast, one fixed mask per slice.

    Returns ``{"kspace": complex64 [N, C, H, W] (undersampled), "target": float32 [N, H, W] (RSS),
    "masks": [N, W], "maps": [C, H, W], "volume": int64 [N] (index of the subject-contrast volume)}``.
    """
    from recon.data.simulate.mri import birdcage_maps

    imgs = torch.from_numpy(brain_images(subjects, n_slices, seed, contrasts, root=root))
    maps = birdcage_maps(BRAIN_COILS, BRAIN_SHAPE)
    g = torch.Generator().manual_seed(seed)
    k = brain_kspace(imgs, maps, BRAIN_NOISE, g)
    rng = np.random.default_rng(seed)
    masks = random_masks(len(imgs), BRAIN_SHAPE[1], rng, ((acceleration, center_fraction),))
    _, target = zero_filled_and_target(k, masks)
    return {"kspace": k * masks[:, None, None, :], "target": target, "masks": masks, "maps": maps,
            "volume": torch.arange(len(imgs)) // n_slices}


def volume_psnr(target: torch.Tensor, pred: torch.Tensor, volume: torch.Tensor) -> float:
    """Mean over volumes of fastMRI PSNR (data range = volume max of the target)."""
    vals = [psnr(target[volume == v], pred[volume == v]) for v in torch.unique(volume)]
    return float(np.mean(vals))


# ---------------------------------------------------------------------------
# head CT data
# ---------------------------------------------------------------------------
def ct_geometry(shape: tuple[int, int] = (256, 256), n_views: int = CT_VIEWS):
    """The 60-view parallel-beam geometry the CT U-Net is trained for (detectors cover the diagonal)."""
    from operators.ct import ParallelBeam2D, sparse_view_angles

    return ParallelBeam2D(shape, sparse_view_angles(n_views), math.ceil(math.hypot(*shape)))


def ct_pairs(split: str, photons: Sequence[float | None], seed: int, root: Path | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(FBP, target) in the prior's scale for every slice of a split and photon count.

    Returns float32 ``[len(photons) * S, 256, 256]`` each (photon-major order).
    """
    from recon.baselines.ct_analytic import fbp
    from recon.data.ct_slices import ct_slices, hu_to_prior
    from recon.data.simulate.ct import MU_WATER_PER_MM, ct_sinogram

    hu = torch.from_numpy(ct_slices(split, root or SHARED_DATA, hu=True))
    op = ct_geometry(tuple(hu.shape[-2:]))
    unit = MU_WATER_PER_MM * CT_PIXEL_MM
    g = torch.Generator().manual_seed(seed)
    fbps = [fbp(ct_sinogram(hu, op, i0, pixel_size_mm=CT_PIXEL_MM, generator=g), op) / unit for i0 in photons]
    target = torch.from_numpy(hu_to_prior(hu.numpy()))
    return torch.cat(fbps).numpy(), target.repeat(len(photons), 1, 1).numpy()


def _augment(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def ct_batch(fbps: np.ndarray, targets: np.ndarray, batch: int, patch: int, rng: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random patches with flips/rot90: (input, target) float32 [batch, 1, patch, patch]."""
    xs, ys = [], []
    h, w = fbps.shape[-2:]
    for _ in range(batch):
        i = int(rng.integers(len(fbps)))
        top, left = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        xs.append(_augment(fbps[i, top: top + patch, left: left + patch], k, flip))
        ys.append(_augment(targets[i, top: top + patch, left: left + patch], k, flip))
    to = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a)))[:, None]  # noqa: E731
    return to(xs), to(ys)


# ---------------------------------------------------------------------------
# losses and validation
# ---------------------------------------------------------------------------
def brain_loss(net: Unet, zf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """fastMRI U-Net loss: L1 between the output and the target, both normalised by the input's mean/std."""
    x = zf[:, None]
    xn, mean, std = normalize_unet_input(x)
    tn = ((target[:, None] - mean) / (std + 1e-11)).clamp(-6, 6)
    return (unet_forward(net, xn) - tn).abs().mean()


def ct_loss(net: Unet, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of the residual U-Net output ``x + net(x)`` against the target."""
    return (x + unet_forward(net, x) - target).abs().mean()


@torch.no_grad()
def validate(net: Unet, task: str, val: dict[str, torch.Tensor]) -> dict[str, float]:
    """Validation PSNR of the network and of its input (zero-filled or FBP), fastMRI convention."""
    net.eval()
    try:
        if task == "brain-mri":
            zf = rss(ifft2c(val["kspace"]))
            out = torch.cat([mri_unet_image(net, zf[i: i + 8]) for i in range(0, len(zf), 8)])
            res = {"val_psnr": volume_psnr(val["target"], out, val["volume"]),
                   "val_psnr_input": volume_psnr(val["target"], zf, val["volume"])}
            if "fm_zf" in val:
                zf = val["fm_zf"]
                out = torch.cat([mri_unet_image(net, zf[i: i + 4]) for i in range(0, len(zf), 4)])
                res.update(val_psnr_1mm=volume_psnr(val["fm_target"], out, val["fm_volume"]),
                           val_psnr_1mm_input=volume_psnr(val["fm_target"], zf, val["fm_volume"]))
            return res
        x = val["fbp"][:, None]
        out = torch.cat([x[i: i + 4] + unet_forward(net, x[i: i + 4]) for i in range(0, len(x), 4)])[:, 0]
        return {"val_psnr": psnr(val["target"], out.clamp_min(0)),
                "val_psnr_input": psnr(val["target"], val["fbp"].clamp_min(0))}
    finally:
        net.train()


# ---------------------------------------------------------------------------
# configuration and cache
# ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class UNetTrainingConfig:
    """Settings of one U-Net training run (the ``recon train-unet`` flags, same names and defaults).

    ``chans=None`` picks the task's width (24 brain-mri, 16 head-ct); ``cache=None`` is ``OUT/data.npz``;
    ``export`` (when set) receives the single-file weights at the end, float16 with ``half``.
    """

    task: str
    out: Path
    cache: Path | None = None
    data_root: Path = SHARED_DATA
    slices: int = 10
    resume: bool = False
    steps: int = 20_000
    max_minutes: float | None = None
    ckpt_minutes: float = 5.0
    chans: int | None = None
    pools: int = 4
    batch: int = 4
    patch: int = 128
    lr: float = 1e-3
    seed: int = 0
    threads: int = 0
    log_every: int = 50
    export: Path | None = None
    half: bool = False
    fastmri_like: float = 0.0
    init: Path | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task '{self.task}'; use one of {TASKS}")
        if not 0.0 <= self.fastmri_like <= 1.0 or (self.fastmri_like and self.task != "brain-mri"):
            raise ValueError(f"fastmri_like must be in [0, 1] and is for brain-mri only, got {self.fastmri_like}")

    def validation_columns(self) -> tuple[str, ...]:
        return VALIDATION_COLUMNS + (("val_psnr_1mm", "val_psnr_1mm_input") if self.fastmri_like else ())

    def record(self) -> dict[str, str]:
        """Every setting as a string (the checkpoint's and exported file's ``args``)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    def net_config(self) -> UnetConfig:
        chans = self.chans or (24 if self.task == "brain-mri" else 16)
        return UnetConfig(in_chans=1, out_chans=1, chans=chans, num_pool_layers=self.pools, drop_prob=0.0)

    def fit_config(self) -> FitConfig:
        return FitConfig(steps=self.steps, max_minutes=self.max_minutes, ckpt_minutes=self.ckpt_minutes,
                         log_every=self.log_every, resume=self.resume)


def _prepare(cache: Path, config: UNetTrainingConfig) -> dict[str, np.ndarray]:
    """Simulate the training and validation data once into ``cache`` (npz) and load it."""
    if not cache.exists():
        root = Path(config.data_root)
        from recon.data.brainweb import BRAINWEB_TRAIN, BRAINWEB_VAL

        if config.task == "brain-mri":
            val = brain_eval_cases(BRAINWEB_VAL, 2, 4.0, 0.08, seed=config.seed + 7, root=root)
            data = {"images": brain_images(BRAINWEB_TRAIN, config.slices, config.seed, root=root),
                    "val_kspace": val["kspace"].numpy(), "val_target": val["target"].numpy(),
                    "val_volume": val["volume"].numpy()}
            if config.fastmri_like:
                data.update(fastmri_like_data(config.slices, config.seed, root))
        else:
            fb, tg = ct_pairs("train", CT_PHOTONS, config.seed, root)
            vfb, vtg = ct_pairs("val", (1e6,), config.seed + 7, root)
            data = {"fbp": fb, "target": tg, "val_fbp": vfb, "val_target": vtg}
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, **data)
        os.replace(tmp, cache)
    with np.load(cache) as f:
        data = {k: f[k] for k in f.files}
    if config.fastmri_like and "fm_images" not in data:
        raise ValueError(f"{cache} was simulated without the fastMRI-like data that fastmri_like="
                         f"{config.fastmri_like} needs: use another --cache (or delete this one)")
    return data


def fastmri_like_data(slices: int, seed: int, root: Path) -> dict[str, np.ndarray]:
    """Training images (BrainWeb train subjects) and validation pairs (49, 50: 2 slices per contrast, random
    4x with centre fraction 0.08, the default noise level) for the fastMRI-like steps."""
    from recon.data.brainweb import BRAINWEB_TRAIN, BRAINWEB_VAL
    from recon.data.simulate.fastmri_like import FastMRILikeSpec

    rng = np.random.default_rng([seed, 11])
    val = torch.from_numpy(fastmri_like_images(BRAINWEB_VAL, 2, seed + 7, root=root))
    spec = FastMRILikeSpec()
    zf, target = zip(*[fastmri_like_pairs(val[i: i + 1], rng, ((4.0, 0.08),), spec.noise_rel, spec.correlation)
                       for i in range(len(val))])
    return {"fm_images": fastmri_like_images(BRAINWEB_TRAIN, slices, seed, root=root),
            "fm_val_zf": torch.cat(zf).numpy(), "fm_val_target": torch.cat(target).numpy(),
            "fm_val_volume": np.repeat(np.arange(len(val) // 2), 2)}


# ---------------------------------------------------------------------------
# one optimisation step per task
# ---------------------------------------------------------------------------
def step_lr(base_lr: float, info: StepInfo) -> float:
    """``base_lr`` until 80 % of the run (by steps or this session's budget), ``base_lr / 10`` after."""
    return base_lr if info.fraction_done < 0.8 else base_lr / 10


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for grp in opt.param_groups:
        grp["lr"] = lr


@dataclass(frozen=True)
class _Task:
    """What `run_train_unet` needs of a task: its step, validation data and description."""

    step: Callable[[StepInfo], StepLog]
    val: dict[str, torch.Tensor]
    description: str


def _brain_task(net: Unet, opt: torch.optim.Optimizer, data: dict[str, np.ndarray], config: UNetTrainingConfig,
                data_rng: np.random.Generator, gen: torch.Generator) -> _Task:
    """Random images [batch, h, w] with random left-right flips, noisy 8-coil k-space, random masks, L1."""
    from recon.data.simulate.mri import birdcage_maps

    images = torch.from_numpy(data["images"])
    maps = birdcage_maps(BRAIN_COILS, tuple(images.shape[-2:]))

    fm_images = torch.from_numpy(data["fm_images"]) if config.fastmri_like else None

    def batch_of(pool: torch.Tensor) -> torch.Tensor:
        idx = torch.from_numpy(data_rng.integers(len(pool), size=config.batch))
        x = pool[idx]
        flip = torch.from_numpy(data_rng.integers(2, size=config.batch).astype(bool))
        return torch.where(flip[:, None, None], x.flip(-1), x)

    def step(info: StepInfo) -> StepLog:
        lr = step_lr(config.lr, info)
        _set_lr(opt, lr)
        if fm_images is not None and data_rng.random() < config.fastmri_like:
            zf, target = fastmri_like_pairs(batch_of(fm_images), data_rng)
        else:
            k = brain_kspace(batch_of(images), maps, BRAIN_NOISE, gen)
            zf, target = zero_filled_and_target(k, random_masks(config.batch, k.shape[-1], data_rng))
        return _optimise(net, opt, brain_loss(net, zf, target), lr)

    val = {"kspace": torch.from_numpy(data["val_kspace"]), "target": torch.from_numpy(data["val_target"]),
           "volume": torch.from_numpy(data["val_volume"])}
    desc = (f"BrainWeb train subjects, {len(images)} complex slices {tuple(images.shape[-2:])} (T1w/T2w/PDw), "
            f"{BRAIN_COILS} birdcage coils, k-space noise {BRAIN_NOISE}, random 1D masks 4x/0.08 and 8x/0.04")
    if fm_images is not None:
        val.update(fm_zf=torch.from_numpy(data["fm_val_zf"]), fm_target=torch.from_numpy(data["fm_val_target"]),
                   fm_volume=torch.from_numpy(data["fm_val_volume"]))
        desc += (f"; {config.fastmri_like:.0%} of steps fastMRI-like: {len(fm_images)} 1 mm slices "
                 f"{tuple(fm_images.shape[-2:])}, readout oversampled 2x, {FASTMRI_LIKE_COILS} coils, correlated "
                 f"noise {FASTMRI_LIKE_NOISE[0]}-{FASTMRI_LIKE_NOISE[1]}x the real T1 file's level")
    return _Task(step, val, desc)


def _ct_task(net: Unet, opt: torch.optim.Optimizer, data: dict[str, np.ndarray], config: UNetTrainingConfig,
             data_rng: np.random.Generator) -> _Task:
    """Random augmented (FBP, target) patches [batch, 1, patch, patch], residual L1."""

    def step(info: StepInfo) -> StepLog:
        lr = step_lr(config.lr, info)
        _set_lr(opt, lr)
        x, target = ct_batch(data["fbp"], data["target"], config.batch, config.patch, data_rng)
        return _optimise(net, opt, ct_loss(net, x, target), lr)

    val = {"fbp": torch.from_numpy(data["val_fbp"]), "target": torch.from_numpy(data["val_target"])}
    desc = (f"head CT train slices 0..71, {CT_VIEWS}-view parallel beam, photons {CT_PHOTONS}, "
            f"FBP (ram-lak) input in water units, {config.patch}px patches")
    return _Task(step, val, desc)


def _optimise(net: Unet, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> StepLog:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return StepLog(loss=float(loss.detach()), lr=lr)


# ---------------------------------------------------------------------------
# training and export
# ---------------------------------------------------------------------------
def run_train_unet(config: UNetTrainingConfig) -> dict[str, Any]:
    """Train (or resume) a U-Net baseline; returns a summary (steps, wall time, loss, validation, sha256).

    Checkpoint (``OUT/checkpoint.pt``): ``task``, ``net_config``, ``data_description``, ``args``
    (`UNetTrainingConfig.record`) and `priors.fit.fit`'s entries (incl. ``validation``).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _prepare(Path(config.cache or out / "data.npz"), config)
    cfg = config.net_config()
    torch.manual_seed(config.seed)  # weight initialisation
    net = Unet.from_config(cfg)
    if config.init is not None:  # fine-tuning: start from a trained U-Net of the same configuration
        start = load_unet(config.init).net
        if start.chans != cfg.chans or start.num_pool_layers != cfg.num_pool_layers:
            raise ValueError(f"--init {config.init}: chans {start.chans}, {start.num_pool_layers} pools; "
                             f"the run asks for {cfg.chans}, {cfg.num_pool_layers}")
        net.load_state_dict(start.state_dict())
        net.requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    data_rng = np.random.default_rng([config.seed, 2])
    gen = torch.Generator().manual_seed(config.seed + 3)
    if config.task == "brain-mri":
        task = _brain_task(net, opt, data, config, data_rng, gen)
    else:
        task = _ct_task(net, opt, data, config, data_rng)

    def on_resume(ck: dict[str, Any]) -> None:
        if ck["net_config"] != cfg.__dict__ or ck["task"] != config.task:
            raise ValueError(f"checkpoint ({ck['task']}, {ck['net_config']}) differs from the request "
                             f"({config.task}, {cfg.__dict__})")

    def extra_state() -> dict[str, Any]:
        return {"task": config.task, "net_config": dict(cfg.__dict__), "data_description": task.description,
                "args": config.record()}

    result = fit(task.step, net, opt, out, config.fit_config(), rngs={"data_rng": data_rng, "torch_rng": gen},
                 extra_state=extra_state, on_resume=on_resume, validate=lambda: validate(net, config.task, task.val),
                 validation_columns=config.validation_columns())
    summary: dict[str, Any] = {"steps": result.steps, "wall_time_s": result.wall_time_s,
                               "final_loss": result.final_loss, "validation": result.validation,
                               "checkpoint": str(result.checkpoint)}
    if config.export is not None:
        summary["sha256"] = export_unet(result.checkpoint, config.export, half=config.half)
        summary["export"] = str(config.export)
    return summary


def export_unet(checkpoint: Path | str, out: Path | str, half: bool = False) -> str:
    """Write the single-file U-Net (see `recon.baselines.unet`) from a training checkpoint; returns its sha256."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["net"].items()}
    obj = {"format_version": UNET_FORMAT, "kind": UNET_KIND, "task": ck["task"], "net_config": ck["net_config"],
           "state_dict": sd, "meta": {"steps": ck["step"], "wall_time_s": round(ck["wall_time_s"], 1),
                                      "final_loss": ck["final_loss"], "validation": ck.get("validation", {}),
                                      "data": ck["data_description"], "args": ck["args"]}}
    return write_weights(obj, out)
