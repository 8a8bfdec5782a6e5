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
weights (see `recon.baselines.unet`) and prints its sha256.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from operators.fft import fft2c, ifft2c, rss
from priors.networks.fastmri_unet import Unet, UnetConfig, normalize_unet_input
from priors.registry import write_weights
from recon.baselines.unet import UNET_FORMAT, UNET_KIND, mri_unet_image, unet_forward
from recon.data.masks import make_mask
from recon.metrics import psnr

CHECKPOINT_NAME = "checkpoint.pt"
BRAIN_SHAPE = (144, 120)       # 1.5 mm over BrainWeb's 217 x 181 mm field of view
BRAIN_COILS = 8
BRAIN_NOISE = 0.002            # std of the real and imaginary k-space noise (images have p99 |x| = 1)
BRAIN_CONTRASTS = ("T1w", "T2w", "PDw")
BRAIN_SETTINGS = ((4.0, 0.08), (8.0, 0.04))   # (acceleration, centre fraction), fastMRI challenge
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
    from recon.data.brainweb import SHARED_DATA, brainweb_slices, load_brainweb_labels, normalize_p99

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
    from recon.baselines.ct import fbp
    from recon.data.brainweb import SHARED_DATA
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
            return {"val_psnr": volume_psnr(val["target"], out, val["volume"]),
                    "val_psnr_input": volume_psnr(val["target"], zf, val["volume"])}
        x = val["fbp"][:, None]
        out = torch.cat([x[i: i + 4] + unet_forward(net, x[i: i + 4]) for i in range(0, len(x), 4)])[:, 0]
        return {"val_psnr": psnr(val["target"], out.clamp_min(0)),
                "val_psnr_input": psnr(val["target"], val["fbp"].clamp_min(0))}
    finally:
        net.train()


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------
def _prepare(task: str, cache: Path, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Simulate the training and validation data once into ``cache`` (npz) and load it."""
    if not cache.exists():
        root = Path(args.data_root)
        from recon.data.brainweb import BRAINWEB_TRAIN, BRAINWEB_VAL

        if task == "brain-mri":
            val = brain_eval_cases(BRAINWEB_VAL, 2, 4.0, 0.08, seed=args.seed + 7, root=root)
            data = {"images": brain_images(BRAINWEB_TRAIN, args.slices, args.seed, root=root),
                    "val_kspace": val["kspace"].numpy(), "val_target": val["target"].numpy(),
                    "val_volume": val["volume"].numpy()}
        else:
            fb, tg = ct_pairs("train", CT_PHOTONS, args.seed, root)
            vfb, vtg = ct_pairs("val", (1e6,), args.seed + 7, root)
            data = {"fbp": fb, "target": tg, "val_fbp": vfb, "val_target": vtg}
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, **data)
        os.replace(tmp, cache)
    with np.load(cache) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
def export_unet(checkpoint: Path | str, out: Path | str, half: bool = False) -> str:
    """Write the single-file U-Net (see `recon.baselines.unet`) from a training checkpoint; returns its sha256."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["net"].items()}
    obj = {"format_version": UNET_FORMAT, "kind": UNET_KIND, "task": ck["task"], "net_config": ck["net_config"],
           "state_dict": sd, "meta": {"steps": ck["step"], "wall_time_s": round(ck["wall_time_s"], 1),
                                      "final_loss": ck["final_loss"], "validation": ck.get("validation", {}),
                                      "data": ck["data_description"], "args": ck["args"]}}
    return write_weights(obj, out)


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def add_train_unet_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``recon train-unet``."""
    from recon.data.brainweb import SHARED_DATA

    p.add_argument("--task", choices=("brain-mri", "head-ct"), required=True)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt, loss.csv)")
    p.add_argument("--cache", type=Path, default=None, help="simulated data (npz); default OUT/data.npz")
    p.add_argument("--data-root", type=Path, default=SHARED_DATA, help="folder with brainweb/ and ct/")
    p.add_argument("--slices", type=int, default=10, help="brain: slices per train subject and contrast")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, default=20_000, help="stop after this many optimiser steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this wall time")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint and validation interval")
    p.add_argument("--chans", type=int, default=None, help="U-Net width (default: 24 brain-mri, 16 head-ct)")
    p.add_argument("--pools", type=int, default=4, help="number of pooling layers")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128, help="head-ct: training patch size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=50, help="CSV row every N steps")
    p.add_argument("--export", type=Path, default=None, help="write the single-file weights here at the end")
    p.add_argument("--half", action="store_true", help="export float16 weights")
    return p


def run_train_unet(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) a U-Net baseline; returns a summary (steps, wall time, loss, validation, sha256)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    task = args.task
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck_path = out / CHECKPOINT_NAME
    data = _prepare(task, Path(args.cache or out / "data.npz"), args)
    chans = args.chans or (24 if task == "brain-mri" else 16)
    cfg = UnetConfig(in_chans=1, out_chans=1, chans=chans, num_pool_layers=args.pools, drop_prob=0.0)
    torch.manual_seed(args.seed)  # weight initialisation
    net = Unet.from_config(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    data_rng = np.random.default_rng([args.seed, 2])
    gen = torch.Generator().manual_seed(args.seed + 3)
    step, wall_prev, final_loss, validation = 0, 0.0, float("nan"), {}
    if task == "brain-mri":
        from recon.data.simulate.mri import birdcage_maps

        images = torch.from_numpy(data["images"])
        maps = birdcage_maps(BRAIN_COILS, tuple(images.shape[-2:]))
        val = {"kspace": torch.from_numpy(data["val_kspace"]), "target": torch.from_numpy(data["val_target"]),
               "volume": torch.from_numpy(data["val_volume"])}
        desc = (f"BrainWeb train subjects, {len(images)} complex slices {tuple(images.shape[-2:])} (T1w/T2w/PDw), "
                f"{BRAIN_COILS} birdcage coils, k-space noise {BRAIN_NOISE}, random 1D masks 4x/0.08 and 8x/0.04")
    else:
        val = {"fbp": torch.from_numpy(data["val_fbp"]), "target": torch.from_numpy(data["val_target"])}
        desc = (f"head CT train slices 0..71, {CT_VIEWS}-view parallel beam, photons {CT_PHOTONS}, "
                f"FBP (ram-lak) input in water units, {args.patch}px patches")

    if args.resume:
        if not ck_path.exists():
            raise FileNotFoundError(f"--resume given but {ck_path} does not exist")
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        if ck["net_config"] != cfg.__dict__ or ck["task"] != task:
            raise ValueError(f"checkpoint ({ck['task']}, {ck['net_config']}) differs from the request "
                             f"({task}, {cfg.__dict__})")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        data_rng.bit_generator.state = ck["data_rng"]
        gen.set_state(ck["torch_rng"])
        step, wall_prev, final_loss = ck["step"], ck["wall_time_s"], ck["final_loss"]
        validation = ck.get("validation", {})

    t0 = time.monotonic()

    def save() -> None:
        tmp = ck_path.with_suffix(".tmp")
        torch.save({"task": task, "net_config": dict(cfg.__dict__), "net": net.state_dict(), "opt": opt.state_dict(),
                    "data_rng": data_rng.bit_generator.state, "torch_rng": gen.get_state(), "step": step,
                    "wall_time_s": wall_prev + time.monotonic() - t0, "final_loss": final_loss,
                    "validation": validation, "data_description": desc,
                    "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
        os.replace(tmp, ck_path)

    csv_path = out / "loss.csv"
    new_csv = not csv_path.exists() or not args.resume
    fcsv = open(csv_path, "w" if new_csv else "a", newline="")
    writer = csv.writer(fcsv)
    if new_csv:
        writer.writerow(["step", "wall_s", "loss", "lr", "val_psnr", "val_psnr_input"])
    budget_s = 60 * args.max_minutes if args.max_minutes is not None else math.inf
    last_ck, run_losses = t0, []
    net.train()
    try:
        while step < args.steps and time.monotonic() - t0 < budget_s:
            progress = max(step / args.steps, (time.monotonic() - t0) / budget_s)
            lr = args.lr if progress < 0.8 else args.lr / 10
            for grp in opt.param_groups:
                grp["lr"] = lr
            if task == "brain-mri":
                idx = torch.from_numpy(data_rng.integers(len(images), size=args.batch))
                x = images[idx]
                flip = torch.from_numpy(data_rng.integers(2, size=args.batch).astype(bool))
                x = torch.where(flip[:, None, None], x.flip(-1), x)
                k = brain_kspace(x, maps, BRAIN_NOISE, gen)
                zf, target = zero_filled_and_target(k, random_masks(args.batch, k.shape[-1], data_rng))
                loss = brain_loss(net, zf, target)
            else:
                x, target = ct_batch(data["fbp"], data["target"], args.batch, args.patch, data_rng)
                loss = ct_loss(net, x, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_losses.append(float(loss.detach()))
            row = None
            if time.monotonic() - last_ck > 60 * args.ckpt_minutes:
                validation = validate(net, task, val)
                save()
                last_ck = time.monotonic()
                row = [f"{validation['val_psnr']:.3f}", f"{validation['val_psnr_input']:.3f}"]
            if step % args.log_every == 0 or row:
                final_loss = float(np.mean(run_losses)) if run_losses else final_loss
                writer.writerow([step, f"{wall_prev + time.monotonic() - t0:.1f}", f"{final_loss:.6f}",
                                 f"{lr:.3g}", *(row or ["", ""])])
                fcsv.flush()
                run_losses = []
    finally:
        if run_losses:
            final_loss = float(np.mean(run_losses))
        validation = validate(net, task, val)
        writer.writerow([step, f"{wall_prev + time.monotonic() - t0:.1f}", f"{final_loss:.6f}", "",
                         f"{validation['val_psnr']:.3f}", f"{validation['val_psnr_input']:.3f}"])
        fcsv.close()
        save()
    summary: dict[str, Any] = {"steps": step, "wall_time_s": wall_prev + time.monotonic() - t0,
                               "final_loss": final_loss, "validation": validation, "checkpoint": str(ck_path)}
    if args.export is not None:
        summary["sha256"] = export_unet(ck_path, args.export, half=args.half)
        summary["export"] = str(args.export)
    print(summary)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    p = add_train_unet_arguments(argparse.ArgumentParser(prog="train-unet", description=__doc__))
    run_train_unet(p.parse_args(argv))


if __name__ == "__main__":
    main()
