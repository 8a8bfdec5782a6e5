"""Training our own score priors: denoising score matching with EDM weighting (Karras et al. 2022).

For a clean patch ``x0`` (complex -> 2 channels, real -> 1), ``ln sigma ~ N(P_mean, P_std^2)``
(clamped to ``[sigma_min, sigma_max]``) and ``n ~ N(0, I)``:

    loss = lambda(sigma) * || D(x0 + sigma n; sigma) - x0 ||^2,   lambda = (sigma^2 + sd^2) / (sigma sd)^2

where ``D`` is `priors.base.EDMPrior` around a `priors.networks.UNet` (the exact object used at
inference). AdamW with a linear warm-up, gradient clipping, an EMA of the weights; patches come
from a `PatchSampler` (e.g. `recon.data.pools.ImagePool`: flips, 90-degree rotations, random
smooth phase for complex data). ``init_from`` starts from a prior file's (or bundled prior's) weights
instead of a random initialisation: fine-tuning, e.g. with a lower learning rate or larger patches; the
network config must match. Resume, checkpoints, ``loss.csv`` and the wall-clock budget are
`priors.fit.fit`'s. Deterministic by ``seed``: patch sampling and noise use seeded generators
whose states are saved in the checkpoint, so a resumed run continues the same sequence.
The command line is ``recon train-prior`` (`recon.commands.train_prior`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from priors.base import EDMPrior, PriorInfo, standard_noise
from priors.fit import CHECKPOINT_NAME, FitConfig, StepInfo, StepLog, fit
from priors.networks.unet import UNet, UNetConfig
from priors.registry import load, read_registry, sha256_bytes, write_weights

FORMAT_VERSION = 1


class PatchSampler(Protocol):
    """Where training patches come from (`recon.data.pools.ImagePool` is one)."""

    complex_valued: bool
    description: str

    def sample(self, batch: int, patch: int, rng: np.random.Generator) -> torch.Tensor:
        """Random patches, complex64 or float32 ``[batch, patch, patch]``, drawn from ``rng`` only."""
        ...


@dataclass(frozen=True, kw_only=True)
class PriorTrainingConfig:
    """Settings of one prior training run (the ``recon train-prior`` flags, same names and defaults).

    ``data``, ``data_root`` and ``slices`` say how the patch sampler was built; they are recorded
    in the checkpoint (``args``) and the exported file, the sampler itself is passed to
    `run_train_prior`. ``mults`` is comma separated (``"1,2,2,2"``), as on the command line.
    """

    data: str = ""
    data_root: Path | None = None
    out: Path
    name: str = "custom-prior"
    init_from: str | None = None
    resume: bool = False
    steps: int = 100_000
    max_minutes: float | None = None
    ckpt_minutes: float = 5.0
    ckpt_every: int = 0
    batch: int = 8
    patch: int = 64
    slices: int = 16
    width: int = 32
    mults: str = "1,2,2,2"
    res_blocks: int = 2
    no_attention: bool = False
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 1e-4
    clip: float = 1.0
    ema: float = 0.999
    p_mean: float = -1.5
    p_std: float = 1.5
    sigma_min: float = 0.002
    sigma_max: float = 20.0
    sigma_data: float = 0.5
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    log_every: int = 50
    quiet: bool = False

    def record(self) -> dict[str, str]:
        """Every setting as a string (the checkpoint's and exported file's ``args``)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    def fit_config(self) -> FitConfig:
        return FitConfig(steps=self.steps, max_minutes=self.max_minutes, ckpt_minutes=self.ckpt_minutes,
                         ckpt_every=self.ckpt_every, log_every=self.log_every, resume=self.resume,
                         progress=not self.quiet, desc=self.name)


# ---------------------------------------------------------------------------
# model, loss, EMA
# ---------------------------------------------------------------------------
def build_prior(config: PriorTrainingConfig, complex_valued: bool, data_desc: str
                ) -> tuple[EDMPrior, UNetConfig, PriorInfo]:
    """The untrained prior (weights from torch's global generator), its network config and `PriorInfo`."""
    ch = 2 if complex_valued else 1
    cfg = UNetConfig(in_channels=ch, out_channels=ch, width=config.width,
                     mults=tuple(int(m) for m in str(config.mults).split(",")), res_blocks=config.res_blocks,
                     attention=not config.no_attention)
    info = PriorInfo(
        name=config.name, value_kind="complex" if complex_valued else "real",
        modality="mri" if complex_valued else "ct",
        normalization="p99" if complex_valued else "fixed", scale=1.0,
        sigma_min=config.sigma_min, sigma_max=config.sigma_max, sigma_data=config.sigma_data,
        resolution=config.patch, trained_on=data_desc,
        extra={} if complex_valued else {"intensity": "x = max((HU + 1000) / 1000, 0): air 0, water 1"},
    )
    return EDMPrior(UNet(**cfg.to_dict()), info), cfg, info


def start_from(net: torch.nn.Module, cfg: UNetConfig, source: str) -> dict[str, Any]:
    """Load the weights of prior ``source`` (bundled name or file) into ``net``; its config must be ``cfg``.

    Prior files hold the EMA weights only: they become both the trained and the averaged weights.
    Returns the source's lineage (`lineage`), which the checkpoint and the exported prior keep."""
    try:
        init = load(source)
    except (KeyError, OSError, ValueError) as e:  # unknown name, unreadable or inconsistent file
        raise ValueError(f"--init-from {source}: {e}") from e
    if not isinstance(init, EDMPrior):
        raise ValueError(f"--init-from {source}: not an EDM U-Net prior ({type(init).__name__})")
    init_cfg = init.net.config
    if init_cfg.to_dict() != cfg.to_dict():
        raise ValueError(f"--init-from {source}: its network config {init_cfg.to_dict()} differs from the "
                         f"requested {cfg.to_dict()} (set --width/--mults/--res-blocks/--no-attention to match)")
    net.load_state_dict(init.net.state_dict())
    return lineage(source, init.meta)


def lineage(source: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Where a fine-tuned prior started: ``{"source", "sha256", **meta}`` of prior ``source`` (bundled name or
    file; ``meta`` its training record, itself with an ``"init"`` when it was fine-tuned in turn)."""
    reg = read_registry()
    sha = reg[source]["sha256"] if source in reg else sha256_bytes(Path(source).read_bytes())
    return {"source": source, "sha256": sha, **meta}


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
    """``ema <- decay * ema + (1 - decay) * net``, parameter by parameter."""
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1 - decay)


def ema_decay(decay: float, steps_done: int) -> float:
    """The EMA decay after ``steps_done`` steps: ``decay`` with a ``(1 + t) / (10 + t)`` warm-up."""
    return min(decay, (1 + steps_done) / (10 + steps_done))


def _edm_step(prior: EDMPrior, ema: torch.nn.Module, opt: torch.optim.Optimizer, sampler: PatchSampler,
              config: PriorTrainingConfig, data_rng: np.random.Generator, gen: torch.Generator,
              device: torch.device) -> Callable[[StepInfo], StepLog]:
    """One step: patches ``[batch, patch, patch]``, warm-up learning rate, EDM loss, clipped AdamW, EMA."""
    net = prior.net

    def step(info: StepInfo) -> StepLog:
        x0 = sampler.sample(config.batch, config.patch, data_rng).to(device)
        lr = config.lr * min(1.0, (info.step + 1) / max(config.warmup, 1))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = edm_loss(prior, x0, gen, config.p_mean, config.p_std, config.sigma_min, config.sigma_max)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip)
        opt.step()
        ema_update(ema, net, ema_decay(config.ema, info.step + 1))
        return StepLog(loss=float(loss.detach()), lr=lr)

    return step


# ---------------------------------------------------------------------------
# training and export
# ---------------------------------------------------------------------------
def run_train_prior(config: PriorTrainingConfig, sampler: PatchSampler) -> dict[str, Any]:
    """Train (or resume) a prior on ``sampler``'s patches; returns a summary dict (steps, wall time, final loss, paths).

    Checkpoint (``OUT/checkpoint.pt``): ``format_version``, ``net_config``, ``info``, ``ema``,
    ``data_description``, ``args`` (`PriorTrainingConfig.record`) and `priors.fit.fit`'s entries.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)  # weight initialisation
    prior, cfg, info = build_prior(config, sampler.complex_valued, sampler.description)
    init: dict[str, Any] | None = None  # where a fine-tuning run started (kept in the checkpoint)
    if config.init_from and not config.resume:  # a resumed run has the fine-tuned weights in its checkpoint
        init = start_from(prior.net, cfg, config.init_from)
    prior.to(device)
    net = prior.net
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_rng = np.random.default_rng([config.seed, 2])
    gen = torch.Generator(device=device).manual_seed(config.seed + 3)

    def on_resume(ck: dict[str, Any]) -> None:
        nonlocal init
        if ck["net_config"] != cfg.to_dict():
            raise ValueError(f"checkpoint config {ck['net_config']} differs from the requested {cfg.to_dict()}")
        ema.load_state_dict(ck["ema"])
        init = ck.get("init")

    def extra_state() -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "net_config": cfg.to_dict(), "info": info.to_dict(),
                "ema": ema.state_dict(), "data_description": sampler.description, "args": config.record(),
                **({"init": init} if init else {})}

    result = fit(_edm_step(prior, ema, opt, sampler, config, data_rng, gen, device), net, opt, config.out,
                 config.fit_config(), rngs={"data_rng": data_rng, "torch_rng": gen},
                 extra_state=extra_state, on_resume=on_resume)
    return {"steps": result.steps, "wall_time_s": result.wall_time_s, "final_loss": result.final_loss,
            "checkpoint": str(result.checkpoint), "loss_csv": str(result.log)}


def export_prior(checkpoint: Path | str, out: Path | str, name: str | None = None, half: bool = False,
                 init: dict[str, Any] | None = None) -> str:
    """Write the single-file prior (EMA weights + config + PriorInfo + metadata); returns its sha256.

    File layout (``torch.save`` of a dict): ``format_version``, ``kind="edm-unet"``,
    ``net_config`` (`UNetConfig.to_dict`), ``info`` (`PriorInfo.to_dict`), ``state_dict``
    (EMA weights, float32 or float16), ``meta`` (steps, wall time, final loss, data, args, and for a
    fine-tuned prior ``init``: the starting prior's `lineage`, from the checkpoint or given as ``init``).
    """
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    info = dict(ck["info"])
    if name:
        info["name"] = name
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["ema"].items()}
    meta = {"steps": ck["step"], "wall_time_s": ck["wall_time_s"], "final_loss": ck["final_loss"],
            "data": ck["data_description"], "args": ck["args"]}
    if init or ck.get("init"):
        meta["init"] = init or ck["init"]
    obj = {
        "format_version": FORMAT_VERSION,
        "kind": "edm-unet",
        "net_config": ck["net_config"],
        "info": info,
        "state_dict": sd,
        "meta": meta,
    }
    return write_weights(obj, out)
