"""Training our own score priors: denoising score matching with EDM weighting (Karras et al. 2022).

For a clean patch ``x0`` (complex -> 2 channels, real -> 1), ``ln sigma ~ N(P_mean, P_std^2)``
(clamped to ``[sigma_min, sigma_max]``) and ``n ~ N(0, I)``:

    loss = lambda(sigma) * || D(x0 + sigma n; sigma) - x0 ||^2,   lambda = (sigma^2 + sd^2) / (sigma sd)^2

where ``D`` is `priors.base.EDMPrior` around a `priors.networks.UNet` (the exact object used at
inference). AdamW, gradient clipping, an EMA of the weights, augmentation (flips, 90-degree
rotations, random smooth phase for complex data), random patches, a CSV of the loss,
checkpoints every few minutes, ``--resume`` and a wall-clock budget ``--max-minutes``.
Deterministic by ``--seed``: data simulation, patch sampling and noise use seeded generators
whose states are saved in the checkpoint, so a resumed run continues the same sequence.

Data sources (``--data``, comma separated):
    brainweb      BrainWeb train subjects, T1w/T2w/PDw, simulated complex (`recon.data.brainweb`)
    colin27       Colin27 axial/coronal/sagittal slices, magnitude (random smooth phase added)
    ct            head-CT train slices 0..71, real, ``(HU + 1000) / 1000`` (`recon.data.ct_slices`)
    fastmri:DIR   every ``*.h5`` under DIR in the fastMRI layout; targets ``reconstruction_rss``
                  (or ``reconstruction_esc``), else the RSS of the k-space; random smooth phase added
    fastmri-espirit:DIR   the same files, ESPIRiT-combined complex images (multi-coil only)
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from priors.base import EDMPrior, PriorInfo, standard_noise
from priors.networks.unet import UNet, UNetConfig
from priors.registry import write_weights

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


class TrainingDataError(ValueError):
    """The requested training data cannot be assembled (unknown source, empty folder, mixed kinds)."""


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
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


def _crop_or_pad(img: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
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
    from recon.data.brainweb import random_smooth_phase

    out = []
    for _ in range(batch):
        p = _crop_or_pad(pool.images[int(rng.integers(0, len(pool)))], patch, rng)
        if augment:
            p = np.rot90(p, k=int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if pool.complex_valued:
                p = p * np.exp(1j * random_smooth_phase((patch, patch), rng, extent=256.0))
        out.append(np.ascontiguousarray(p))
    arr = np.stack(out)
    return torch.from_numpy(arr.astype(np.complex64 if pool.complex_valued else np.float32))


def brainweb_pool(root: Path, subjects: Sequence[int], rng: np.random.Generator, n_slices: int) -> list[np.ndarray]:
    """Simulated complex slices (p99 = 1) of every subject and contrast."""
    from recon.data.brainweb import CONTRASTS, brainweb_slices, load_brainweb_labels

    images = []
    for s in subjects:
        labels = load_brainweb_labels(s, root)
        for c in CONTRASTS:
            images.extend(brainweb_slices(s, c, rng, n_slices=n_slices, root=root, labels=labels))
    return images


def colin27_pool(root: Path, n_slices: int) -> list[np.ndarray]:
    from recon.data.brainweb import COLIN27_ORIENTATIONS, colin27_slices

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
    """ESPIRiT-combined complex images of one multi-coil fastMRI-layout file, complex64 ``[S, rH, rW]``.

    Per slice: one ESPIRiT map set from the fully sampled centre (`operators.espirit.espirit_maps`),
    coil combination ``sum_c conj(S_c) ifft2c(k_c)``, centre crop to the header's recon size
    (removes readout oversampling), as fastMRI crops its targets.
    """
    from operators.espirit import espirit_maps
    from operators.fft import ifft2c
    from recon.data.io import center_crop, load_fastmri, recon_crop_shape

    out = []
    with load_fastmri(path) as vol:
        if len(vol.kspace.shape) != 4:
            raise TrainingDataError(f"{path}: ESPIRiT targets need multi-coil k-space [S, C, H, W]")
        crop = recon_crop_shape(vol.header)
        for i in range(vol.kspace.shape[0]):
            k = torch.from_numpy(np.asarray(vol.kspace[i])).to(torch.complex64)
            maps = espirit_maps(k, calib_width=calib_width).to(torch.complex64)
            maps = maps[0] if maps.dim() == 4 else maps
            img = (maps.conj() * ifft2c(k)).sum(0)
            out.append(center_crop(img, crop).numpy())
    return np.stack(out).astype(np.complex64)


def fastmri_pool(folder: Path, espirit: bool = False) -> list[np.ndarray]:
    """p99-normalised images of every ``*.h5`` under ``folder``: RSS targets (real, phase added by
    augmentation) or, with ``espirit``, ESPIRiT-combined complex images (their own phase)."""
    from recon.data.brainweb import normalize_p99

    files = sorted(Path(folder).rglob("*.h5"))
    if not files:
        raise TrainingDataError(f"no *.h5 files under {folder}")
    read = read_fastmri_espirit if espirit else read_fastmri_targets
    return [s.astype(np.complex64) for f in files for s in normalize_p99(read(f))]


def build_pool(sources: Sequence[str], root: Path, seed: int, n_slices: int) -> ImagePool:
    """Assemble the training images of the requested sources (deterministic given ``seed``)."""
    from recon.data.brainweb import BRAINWEB_TRAIN
    from recon.data.ct_slices import ct_slices

    rng = np.random.default_rng([seed, 1])
    images: list[np.ndarray] = []
    kinds: set[bool] = set()
    desc = []
    for src in sources:
        if src == "brainweb":
            imgs = brainweb_pool(root, BRAINWEB_TRAIN, rng, n_slices)
            kinds.add(True)
            desc.append(f"BrainWeb train subjects {BRAINWEB_TRAIN} x T1w/T2w/PDw x {n_slices} axial slices "
                        f"(simulated complex, p99-normalised): {len(imgs)} images")
        elif src == "colin27":
            imgs = colin27_pool(root, n_slices)
            kinds.add(True)
            desc.append(f"Colin27 axial/coronal/sagittal x {n_slices} slices (magnitude + random smooth phase, "
                        f"p99-normalised): {len(imgs)} images")
        elif src == "ct":
            imgs = list(ct_slices("train", root))
            kinds.add(False)
            desc.append(f"head CT train slices 0..71, x = max((HU+1000)/1000, 0): {len(imgs)} images")
        elif src.startswith(("fastmri:", "fastmri-espirit:")):
            kind, folder = src.split(":", 1)
            espirit = kind == "fastmri-espirit"
            imgs = fastmri_pool(Path(folder), espirit=espirit)
            kinds.add(True)
            what = "ESPIRiT-combined complex images" if espirit else "RSS targets"
            desc.append(f"fastMRI folder {folder} ({what} + random smooth phase, p99-normalised): {len(imgs)} images")
        else:
            raise TrainingDataError(f"unknown data source '{src}'; use brainweb, colin27, ct, fastmri:DIR "
                                    "or fastmri-espirit:DIR")
        images.extend(imgs)
    if len(kinds) != 1:
        raise TrainingDataError("cannot mix real (ct) and complex (MRI) sources in one prior")
    return ImagePool(images, kinds.pop(), "; ".join(desc))


# ---------------------------------------------------------------------------
# loss, EMA
# ---------------------------------------------------------------------------
def edm_loss(prior: EDMPrior, x0: torch.Tensor, generator: torch.Generator, p_mean: float, p_std: float,
             sigma_min: float, sigma_max: float) -> torch.Tensor:
    """EDM-weighted denoising loss of a batch ``x0`` ([B, H, W] complex or real) -> scalar.

    The squared error per pixel is ``|D - x0|^2`` (real and imaginary parts summed for complex
    data), averaged over pixels; ``prior._denoise`` is the exact map used at inference.
    """
    b = x0.shape[0]
    ln_s = p_mean + p_std * torch.randn(b, generator=generator, device=x0.device)
    sigma = ln_s.exp().clamp(sigma_min, sigma_max)
    n = standard_noise(x0, generator)
    s = sigma.reshape(-1, 1, 1)
    d = prior._denoise(x0 + s * n, sigma)
    sd = prior.info.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = (d - x0).abs() ** 2
    return (weight * err.flatten(1).mean(1)).mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1 - decay)


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_prior(checkpoint: Path | str, out: Path | str, name: str | None = None, half: bool = False) -> str:
    """Write the single-file prior (EMA weights + config + PriorInfo + metadata); returns its sha256.

    File layout (``torch.save`` of a dict): ``format_version``, ``kind="edm-unet"``,
    ``net_config`` (`UNetConfig.to_dict`), ``info`` (`PriorInfo.to_dict`), ``state_dict``
    (EMA weights, float32 or float16), ``meta`` (steps, wall time, final loss, data, args).
    """
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    info = dict(ck["info"])
    if name:
        info["name"] = name
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["ema"].items()}
    obj = {
        "format_version": FORMAT_VERSION,
        "kind": "edm-unet",
        "net_config": ck["net_config"],
        "info": info,
        "state_dict": sd,
        "meta": {"steps": ck["step"], "wall_time_s": ck["wall_time_s"], "final_loss": ck["final_loss"],
                 "data": ck["data_description"], "args": ck["args"]},
    }
    return write_weights(obj, out)


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def add_train_prior_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``recon train-prior``."""
    from recon.data.brainweb import SHARED_DATA

    p.add_argument("--data", required=True,
                   help="comma-separated: brainweb, colin27, ct, fastmri:DIR, fastmri-espirit:DIR")
    p.add_argument("--data-root", type=Path, default=SHARED_DATA, help="folder with brainweb/, colin27/, ct/")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, loss.csv)")
    p.add_argument("--name", default="custom-prior", help="prior name stored in PriorInfo")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, default=100_000, help="stop after this many optimiser steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint interval (wall clock)")
    p.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0: off)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--slices", type=int, default=16, help="slices per volume / contrast / orientation")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--mults", default="1,2,2,2")
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (with a 1+t/10+t warm-up)")
    p.add_argument("--p-mean", type=float, default=-1.5, help="mean of ln sigma")
    p.add_argument("--p-std", type=float, default=1.5, help="std of ln sigma")
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=20.0)
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=50, help="CSV row every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _build(args: argparse.Namespace, complex_valued: bool, data_desc: str) -> tuple[EDMPrior, UNetConfig, PriorInfo]:
    ch = 2 if complex_valued else 1
    cfg = UNetConfig(in_channels=ch, out_channels=ch, width=args.width,
                     mults=tuple(int(m) for m in str(args.mults).split(",")), res_blocks=args.res_blocks,
                     attention=not args.no_attention)
    info = PriorInfo(
        name=args.name, value_kind="complex" if complex_valued else "real",
        modality="mri" if complex_valued else "ct",
        normalization="p99" if complex_valued else "fixed", scale=1.0,
        sigma_min=args.sigma_min, sigma_max=args.sigma_max, sigma_data=args.sigma_data,
        resolution=args.patch, trained_on=data_desc,
        extra={} if complex_valued else {"intensity": "x = max((HU + 1000) / 1000, 0): air 0, water 1"},
    )
    return EDMPrior(UNet(**cfg.to_dict()), info), cfg, info


def run_train_prior(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) a prior; returns a summary dict (steps, wall time, final loss, paths)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck_path = out / CHECKPOINT_NAME
    sources = [s.strip() for s in args.data.split(",") if s.strip()]
    pool = build_pool(sources, Path(args.data_root), args.seed, args.slices)
    torch.manual_seed(args.seed)  # weight initialisation
    prior, cfg, info = _build(args, pool.complex_valued, pool.description)
    prior.to(device)
    net = prior.net
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    data_rng = np.random.default_rng([args.seed, 2])
    gen = torch.Generator(device=device).manual_seed(args.seed + 3)
    step, wall_prev, final_loss = 0, 0.0, float("nan")

    if args.resume:
        if not ck_path.exists():
            raise FileNotFoundError(f"--resume given but {ck_path} does not exist")
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        if ck["net_config"] != cfg.to_dict():
            raise ValueError(f"checkpoint config {ck['net_config']} differs from the requested {cfg.to_dict()}")
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        data_rng.bit_generator.state = ck["data_rng"]
        gen.set_state(ck["torch_rng"].cpu() if device.type == "cpu" else ck["torch_rng"])
        step, wall_prev, final_loss = ck["step"], ck["wall_time_s"], ck["final_loss"]

    def save() -> None:
        _atomic_save({
            "format_version": FORMAT_VERSION, "net_config": cfg.to_dict(), "info": info.to_dict(),
            "net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "data_rng": data_rng.bit_generator.state, "torch_rng": gen.get_state(),
            "step": step, "wall_time_s": wall_prev + (time.monotonic() - t0), "final_loss": final_loss,
            "data_description": pool.description, "args": {k: str(v) for k, v in vars(args).items()},
        }, ck_path)

    csv_path = out / "loss.csv"
    new_csv = not csv_path.exists() or not args.resume
    fcsv = open(csv_path, "w" if new_csv else "a", newline="")
    writer = csv.writer(fcsv)
    if new_csv:
        writer.writerow(["step", "wall_s", "loss", "lr"])
    from tqdm import tqdm

    t0 = time.monotonic()
    last_ck = t0
    bar = tqdm(total=args.steps, initial=step, disable=args.quiet, mininterval=30.0, desc=args.name)
    run_losses: list[float] = []
    net.train()
    try:
        while step < args.steps:
            if args.max_minutes is not None and time.monotonic() - t0 > 60 * args.max_minutes:
                break
            x0 = sample_patches(pool, args.batch, args.patch, data_rng).to(device)
            lr = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = edm_loss(prior, x0, gen, args.p_mean, args.p_std, args.sigma_min, args.sigma_max)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
            opt.step()
            step += 1
            ema_update(ema, net, min(args.ema, (1 + step) / (10 + step)))
            run_losses.append(float(loss.detach()))
            if step % args.log_every == 0:
                final_loss = float(np.mean(run_losses))
                writer.writerow([step, f"{wall_prev + time.monotonic() - t0:.1f}", f"{final_loss:.6f}", f"{lr:.3g}"])
                fcsv.flush()
                bar.set_postfix(loss=f"{final_loss:.4f}")
                run_losses = []
            bar.update(1)
            if (time.monotonic() - last_ck > 60 * args.ckpt_minutes) or (args.ckpt_every and step % args.ckpt_every == 0):
                save()
                last_ck = time.monotonic()
    finally:
        if run_losses:
            final_loss = float(np.mean(run_losses))
        save()
        bar.close()
        fcsv.close()
    return {"steps": step, "wall_time_s": wall_prev + time.monotonic() - t0, "final_loss": final_loss,
            "checkpoint": str(ck_path), "loss_csv": str(csv_path)}


def main(argv: Sequence[str] | None = None) -> None:
    p = add_train_prior_arguments(argparse.ArgumentParser(prog="train-prior", description=__doc__,
                                                          formatter_class=argparse.RawDescriptionHelpFormatter))
    summary = run_train_prior(p.parse_args(argv))
    print(summary)


if __name__ == "__main__":
    main()
