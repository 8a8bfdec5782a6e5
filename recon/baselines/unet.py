"""U-Net baselines: a trained fastMRI U-Net applied to MRI (zero-filled RSS in) or CT (FBP in, residual).

MRI follows fastMRI's ``UnetDataTransform`` exactly: the zero-filled coil images are combined by
root-sum-of-squares, centre-cropped to the reconstruction size, instance-normalised with their own
mean and std (eps 1e-11) and clamped to [-6, 6]; the network output is mapped back with
``out * std + mean``. CT uses the filtered back-projection in the prior's scale
(``x = mu / (mu_water * pixel)``, water = 1) and learns a correction: ``out = fbp + net(fbp)``.

Sizes the network cannot take as they are (not a multiple of ``2**num_pool_layers``, or smaller
than it) are reflect-padded (zero-padded where reflection is impossible) to the next multiple and
cropped back; training uses the same `unet_forward`, so padding is part of the model.

The registered baselines ``unet`` (MRI and CT) are `unet_mri_reconstruction` and `unet_ct_reconstruction`:
``fn(A, y, net=..., ...) -> Posterior`` like every other baseline.

A spread for the MRI U-Net (a k-space line bootstrap, `bootstrap_lines`): the network runs again on 8 copies of
the data that each keep the fully sampled centre and 3 in 4 of the other sampled lines; the std of those outputs
says where the answer depends on which lines were acquired. It is not a posterior std (the U-Net has no
posterior), but it ranks the U-Net's errors (Spearman 0.55-0.58 over 8 x 8 patches on test slices), and the
interval table (`recon.intervals`, fitted on validation data like the samplers') turns it into a 95% interval with
the same conformal guarantee. The estimate itself is the U-Net's output on all the data, unchanged.

U-Net files (written by `recon.baselines.unet_training.export_unet`) are one ``torch.save`` dict:
``format_version``, ``kind="fastmri-unet"``, ``task`` (``"brain-mri"`` / ``"head-ct"``),
``net_config`` (`UnetConfig` fields), ``state_dict`` (fastMRI parameter names) and ``meta``.
A bare fastMRI state dict (e.g. ``knee_sc_leaderboard_state_dict.pt``) loads too; its width and
depth are read from the parameter shapes.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from operators.base import LinearOperator
from operators.fft import ifft2c, rss
from operators.mri import MultiCoilMRI
from priors.checkpoints import CheckpointError, load_state_dict_checked
from priors.networks.fastmri_unet import Unet, UnetConfig, UnetInputError, normalize_unet_input
from recon.baselines.ct_analytic import fbp
from recon.baselines.registry import register
from recon.data.io import center_crop
from solvers.posterior import Posterior

UNET_FORMAT = 1
#: line-bootstrap replicates of the MRI baseline and the probability that a sampled non-centre line stays in one
#: (8 x 0.75: chosen on validation data, benchmarks/RESULTS.md "A calibrated interval for the U-Net")
REPLICATES = 8
KEEP = 0.75
UNET_KIND = "fastmri-unet"
TASKS = ("brain-mri", "head-ct")


@dataclass
class TrainedUnet:
    """A U-Net and what it was trained for.

    Attributes:
        net: the `Unet` (eval mode, float32).
        task: ``"brain-mri"`` (zero-filled RSS magnitude -> RSS target) or ``"head-ct"`` (FBP -> image,
            residual), or ``"unknown"`` for a bare state dict.
        meta: training metadata (steps, data, validation numbers), empty for bare state dicts.
    """

    net: Unet
    task: str
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# padding and the forward pass
# ---------------------------------------------------------------------------
def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad ``x`` [N, C, H, W] symmetrically so H and W are multiples of ``multiple`` (>= ``multiple``).

    Reflect padding where every pad is smaller than the side, zero padding otherwise.
    Returns the padded tensor and ``(left, right, top, bottom)`` for `unpad`.
    """
    h, w = x.shape[-2:]
    th, tw = max(math.ceil(h / multiple), 1) * multiple, max(math.ceil(w / multiple), 1) * multiple
    top, left = (th - h) // 2, (tw - w) // 2
    pads = (left, tw - w - left, top, th - h - top)
    if not any(pads):
        return x, pads
    mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "constant"
    return F.pad(x, pads, mode=mode), pads


def unpad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo `pad_to_multiple`."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top: h - bottom, left: w - right]


def unet_forward(net: Unet, x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on float [N, C, H, W] of any size >= 1x1, padding to a multiple of ``2**num_pool_layers``."""
    if x.dim() != 4:
        raise UnetInputError(f"unet_forward expects [N, C, H, W], got shape {tuple(x.shape)}")
    if x.is_complex():
        raise UnetInputError("the U-Net takes real images, not complex ones; pass the magnitude |x| or the RSS image")
    xp, pads = pad_to_multiple(x, 2**net.num_pool_layers)
    return unpad(net(xp), pads)


def mri_unet_image(net: Unet, magnitude: torch.Tensor) -> torch.Tensor:
    """fastMRI U-Net on magnitude images: real [..., H, W] -> real [..., H, W] (normalise, run, undo)."""
    lead, hw = magnitude.shape[:-2], magnitude.shape[-2:]
    x = magnitude.reshape(-1, 1, *hw).to(torch.float32)
    xn, mean, std = normalize_unet_input(x)
    out = unet_forward(net, xn) * std + mean
    return out.reshape(*lead, *hw)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def _infer_config(sd: Mapping[str, torch.Tensor]) -> UnetConfig:
    try:
        first = sd["down_sample_layers.0.layers.0.weight"]
        last = sd[[k for k in sd if k.startswith("up_conv.") and k.endswith(".1.weight")][-1]]
    except (KeyError, IndexError) as e:
        raise CheckpointError(
            "not a fastMRI U-Net state dict: no 'down_sample_layers.0.layers.0.weight' or final "
            "'up_conv.<i>.1.weight'", missing=[str(e)]) from e
    n_down = len({k.split(".")[1] for k in sd if k.startswith("down_sample_layers.")})
    return UnetConfig(in_chans=int(first.shape[1]), out_chans=int(last.shape[0]), chans=int(first.shape[0]),
                      num_pool_layers=n_down, drop_prob=0.0)


def unet_from_dict(obj: Mapping[str, Any], device: torch.device | str = "cpu") -> TrainedUnet:
    """Build a `TrainedUnet` from a U-Net file dict or a bare fastMRI state dict.

    Raises `priors.checkpoints.CheckpointError` naming missing, unexpected and mis-shaped keys.
    """
    if obj.get("kind") == UNET_KIND:
        if obj.get("format_version") != UNET_FORMAT:
            raise CheckpointError(f"U-Net file format {obj.get('format_version')} is not supported "
                                  f"(this version reads {UNET_FORMAT})")
        fields = {f.name for f in dataclasses.fields(UnetConfig)}
        cfg = UnetConfig(**{k: v for k, v in obj["net_config"].items() if k in fields})
        sd, task, meta = obj["state_dict"], str(obj.get("task", "unknown")), dict(obj.get("meta", {}))
    elif "kind" in obj:
        raise CheckpointError(f"file holds a '{obj['kind']}', not a U-Net ('{UNET_KIND}'); "
                              "load priors with priors.registry.load")
    else:
        sd = {k.removeprefix("module.").removeprefix("unet."): v for k, v in obj.items()}
        if not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError("not a U-Net file nor a state dict of tensors")
        cfg, task, meta = _infer_config(sd), "unknown", {}
    net = Unet.from_config(cfg)
    load_state_dict_checked(net, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    net = net.to(device).eval()
    net.requires_grad_(False)
    return TrainedUnet(net, task, meta)


def load_unet(name_or_path: str | Path, device: torch.device | str = "cpu") -> TrainedUnet:
    """A bundled U-Net by registry name (``unet-brain-mri``, ``unet-head-ct``; sha256-verified) or a file.

    Raises `priors.registry.UnknownPriorError` for an unknown name and `CheckpointError` for a
    modified file or one whose keys do not fit.
    """
    from priors.registry import WEIGHTS_DIR, UnknownPriorError, read_registry, read_verified

    reg = read_registry()
    key = str(name_or_path)
    if key in reg:
        path, expected = WEIGHTS_DIR / reg[key]["file"], reg[key]["sha256"]
    elif Path(key).is_file():
        path, expected = Path(key), None
    else:
        names = sorted(n for n, e in reg.items() if e.get("kind") == UNET_KIND)
        raise UnknownPriorError(f"unknown U-Net '{key}': not a bundled name and no such file. "
                                f"Bundled U-Nets: {', '.join(names) or '(none)'}")
    obj = read_verified(path, expected, "U-Net")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a U-Net file or state dict")
    return unet_from_dict(obj, device)


def _net(model: TrainedUnet | Unet) -> tuple[Unet, str]:
    return (model.net, model.task) if isinstance(model, TrainedUnet) else (model, "unknown")


# ---------------------------------------------------------------------------
# reconstructions
# ---------------------------------------------------------------------------
@torch.no_grad()
def unet_mri(kspace: torch.Tensor, model: TrainedUnet | Unet, crop: tuple[int, int] | None = None,
             replicates: int = 0, keep: float = KEEP, seed: int = 0) -> Posterior:
    """fastMRI U-Net reconstruction from undersampled multi-coil k-space, with its k-space line bootstrap.

    Args:
        kspace: complex [..., C, H, W] centred k-space, zero where not sampled (the mask already applied; one
            sampling pattern for all leading dimensions).
        model: a `TrainedUnet` (e.g. ``load_unet("unet-brain-mri")``) or a bare `Unet`.
        crop: reconstruction size (e.g. fastMRI's 320x320); None keeps [H, W].
        replicates: K > 1 runs the network again on K copies of the data that each withhold a random part of the
            sampled phase lines (`bootstrap_lines`): ``samples`` holds those K outputs and ``std`` their spread,
            how much the answer depends on the lines it was given. It is *not* a posterior std; calibrated on
            validation data (`recon.intervals`) it gives intervals with the same guarantee as the samplers'.
            0 or 1: no replicates (``std`` None).
        keep: probability that a sampled line outside the fully sampled centre stays in a replicate.
        seed: seeds the replicates' line draws.

    Returns:
        `Posterior` with real float32 ``mean`` [..., h, w] (the magnitude estimate of the RSS image, from all the
        data), and with replicates ``samples`` [K, ..., h, w] and ``std`` [..., h, w].
    """
    net, task = _net(model)
    if task == "head-ct":
        raise UnetInputError("this U-Net was trained for CT (FBP input); use unet_ct")
    if not kspace.is_complex() or kspace.dim() < 3:
        raise UnetInputError(f"unet_mri expects complex multi-coil k-space [..., C, H, W], got "
                             f"{tuple(kspace.shape)} {kspace.dtype}")
    t0 = time.perf_counter()
    zf = rss(ifft2c(kspace))
    if crop is not None:
        zf = center_crop(zf, tuple(crop))
    p = next(net.parameters())
    out = mri_unet_image(net, zf.to(p.device)).to(kspace.device)
    hparams = {"task": task, "chans": net.chans, "num_pool_layers": net.num_pool_layers,
               "crop": None if crop is None else list(crop)}
    if replicates <= 1:
        return Posterior(mean=out, std=None, nfe=1, wall_time=time.perf_counter() - t0, method="unet",
                         hparams=hparams)
    lines = bootstrap_lines(kspace.abs().reshape(-1, *kspace.shape[-2:]).sum(0) > 0, replicates, keep, seed)
    kept = lines.to(kspace.device, kspace.real.dtype).reshape(replicates, *[1] * (kspace.dim() - 1), -1)
    zfs = rss(ifft2c(kspace.unsqueeze(0) * kept))            # [K, ..., H, W]
    if crop is not None:
        zfs = center_crop(zfs, tuple(crop))
    samples = mri_unet_image(net, zfs.to(p.device)).to(kspace.device)
    return Posterior(mean=out, std=samples.std(0), samples=samples, nfe=1 + replicates,
                     wall_time=time.perf_counter() - t0, method="unet",
                     hparams={**hparams, "replicates": replicates, "keep": keep, "seed": seed})


def bootstrap_lines(sampled: torch.Tensor, replicates: int, keep: float, seed: int = 0) -> torch.Tensor:
    """Phase lines of K replicates of a Cartesian acquisition: bool [K, W] from the sampling pattern bool [H, W].

    Every replicate keeps the fully sampled centre (`operators.espirit.acs_region`: what the U-Net and any
    calibration rely on) and each other sampled line with probability `keep`, independently (a
    ``torch.Generator`` seeded with `seed`); unsampled lines stay out.
    """
    from operators.espirit import acs_region

    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    lines = sampled.bool().any(-2).cpu()
    width = lines.numel()
    acs = acs_region(sampled.bool().cpu().numpy())[1]
    centre = torch.zeros(width, dtype=torch.bool)
    start = (width - acs + 1) // 2
    centre[start:start + acs] = True
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.rand(replicates, width, generator=gen, device="cpu") < keep
    return lines & (drawn | centre)


@torch.no_grad()
def unet_ct(sinogram: torch.Tensor, operator, model: TrainedUnet | Unet, unit: float = 1.0,
            filter: str = "ram-lak") -> Posterior:
    """Residual U-Net on the FBP: ``x = fbp + net(fbp)``, both in the prior's scale (water = 1).

    Args:
        sinogram: float [..., n_angles, n_detectors] line integrals.
        operator: the `ParallelBeam2D` geometry of the sinogram.
        model: ``load_unet("unet-head-ct")`` or a bare `Unet` with one input channel.
        unit: attenuation of water per pixel in the sinogram's scale (``MU_WATER_PER_MM * pixel_mm``
            for line integrals of `recon.data.simulate.ct.ct_sinogram`; 1.0 when the image is already in
            the prior's scale). The FBP is divided by it before the network and the output multiplied back.
        filter: FBP filter (ASTRA name).

    Returns:
        `Posterior` with real ``mean`` [..., H, W] in the sinogram's scale.
    """
    net, task = _net(model)
    if task == "brain-mri":
        raise UnetInputError("this U-Net was trained for MRI (zero-filled RSS input); use unet_mri")
    if not unit > 0:
        raise ValueError(f"unet_ct: unit must be positive, got {unit}")
    t0 = time.perf_counter()
    x = fbp(sinogram, operator, filter=filter) / unit
    lead, hw = x.shape[:-2], x.shape[-2:]
    p = next(net.parameters())
    xi = x.reshape(-1, 1, *hw).to(device=p.device, dtype=torch.float32)
    out = (xi + unet_forward(net, xi)).reshape(*lead, *hw).to(device=sinogram.device, dtype=sinogram.dtype)
    return Posterior(mean=out * unit, std=None, nfe=1, wall_time=time.perf_counter() - t0, method="unet-ct",
                     hparams={"task": task, "chans": net.chans, "num_pool_layers": net.num_pool_layers,
                              "unit": unit, "filter": filter})


@torch.no_grad()
def unet_mri_init(kspace: torch.Tensor, op, model: TrainedUnet | Unet, cg_iter: int = 10,
                  magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """A complex initial image for `solvers.ccdf.CCDF` (``init=``) from the magnitude U-Net.

    The U-Net estimates the RSS magnitude, which equals ``|x|`` for maps with ``sum_c |S_c|^2 = 1``
    (ESPIRiT, normalised birdcage); the phase is taken from a short CG-SENSE solve. With M > 1 map sets the
    magnitude is shared between the sets as the CG-SENSE images share it (``x_m = mag * g_m / rss_m(g)``), so the
    sets' root-sum-of-squares is the U-Net's magnitude.

    Args:
        kspace: complex [..., C, H, W] undersampled k-space (as seen by ``op``).
        op: the `operators.mri.MultiCoilMRI` of the acquisition.
        model: the brain U-Net.
        cg_iter: CG iterations for the phase estimate.
        magnitude: the U-Net's output [..., H, W] on this k-space where the caller has it (not run again).

    Returns: complex64 [..., (M,) H, W] (``op``'s domain) in the data's units.
    """
    from operators.linalg import conjugate_gradient

    if magnitude is None:
        magnitude = unet_mri(kspace, model).mean
    magnitude = magnitude.clamp_min(0.0).to(torch.float32)
    g = conjugate_gradient(op.normal, op.adjoint(kspace), n_iter=cg_iter, dims=2).to(torch.complex64)
    if op.n_sets == 1:
        return torch.polar(magnitude, torch.angle(g))
    return magnitude.unsqueeze(-3) * g / rss(g, dim=-3).unsqueeze(-3).clamp_min(1e-12)


@torch.no_grad()
def data_misfit(kspace: torch.Tensor, op, model: TrainedUnet | Unet, magnitude: torch.Tensor | None = None) -> float:
    """How far the U-Net's image is from the acquired data: ``||A x - y|| / ||y||`` for ``x`` = `unet_mri_init`
    (its magnitude with a CG-SENSE phase) and ``y`` = `kspace` [C, H, W]. On data like its training data the U-Net's
    image fits the measured lines about as well on every image; a much worse fit says the data are unlike them (the
    statistic of the U-Net interval's typicality test, `recon.intervals`). `magnitude`: as for `unet_mri_init`."""
    residual = op.forward(unet_mri_init(kspace, op, model, magnitude=magnitude)) - kspace
    return float(torch.linalg.vector_norm(residual) / torch.linalg.vector_norm(kspace).clamp_min(1e-30))


# ---------------------------------------------------------------------------
# baselines: fn(A, y, **hp) -> Posterior
# ---------------------------------------------------------------------------
@register("unet", modality="mri", needs=("net", "crop"))
def unet_mri_reconstruction(A: MultiCoilMRI, y: torch.Tensor, net: TrainedUnet | Unet,
                            crop: tuple[int, int] | None = None, replicates: int = REPLICATES,
                            keep: float = KEEP) -> Posterior:
    """`unet_mri` as a baseline: real magnitude ``mean`` [..., rH, rW] from k-space ``y`` [..., C, H, W], with
    `replicates` line-bootstrap outputs as ``samples`` and their ``std`` (for the calibrated interval).

    The network sees the zero-filled RSS image of ``y`` alone (fastMRI's convention); ``A`` serves only the
    replicates' typicality statistic, the U-Net image's `data_misfit` (``fit``).
    """
    post = unet_mri(y, net, crop=crop, replicates=replicates, keep=keep)
    if replicates > 1:  # the output is the uncropped image when the crop is the whole grid: no second network call
        post.fit = data_misfit(y, A, net, post.mean if post.mean.shape[-2:] == y.shape[-2:] else None)
    return post


@register("unet", modality="ct", needs=("net", "unit"))
def unet_ct_reconstruction(A: LinearOperator, y: torch.Tensor, net: TrainedUnet | Unet, unit: float = 1.0,
                           filter: str = "ram-lak") -> Posterior:
    """`unet_ct` as a baseline: real ``mean`` [..., H, W] from the sinogram ``y`` [..., n_angles, n_detectors]
    of the geometry ``A``."""
    return unet_ct(y, A, net, unit=unit, filter=filter)
