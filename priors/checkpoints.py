"""Load published checkpoints of score-MRI (NCSN++), DDS (ADM) and fastMRI (U-Net, VarNet).

`load_checkpoint(path, family, config)` builds our parameter-compatible network, reads the
checkpoint container, loads the weights strictly and returns a `Prior` (``ncsnpp``, ``adm``) or
the bare network (``unet``, ``varnet``).

Containers understood:
    * score_sde / score-MRI ``checkpoint_*.pth``: ``{"model", "ema", "optimizer", "step"}``.
      ``model`` keys carry DataParallel's ``module.`` prefix; ``ema["shadow_params"]`` is a list
      of tensors in the registration order of the trainable parameters (every parameter except
      the fixed Fourier frequencies ``all_modules.0.W``). The EMA weights are used by default
      (``prefer_ema=True``), the raw ``model`` weights supply ``W``. The ``sigmas`` buffer of the
      checkpoint is ignored (unused by the continuous model; score-MRI skips it too).
    * plain state dicts (DDS ``*.pt``, fastMRI ``*_leaderboard_state_dict.pt``, guided-diffusion
      EMA files), with or without a ``module.`` prefix;
    * ``{"state_dict": ...}`` wrappers (PyTorch Lightning) whose keys share one prefix such as
      ``unet.`` / ``varnet.`` (stripped). Lightning files usually pickle other Python objects:
      they need ``weights_only=False``, which executes code from the file: use only trusted files.

Published models (`NAMED_CONFIGS`) and the intensity normalisation each expects:

============================== ======= ====================================================
name                           family  input and normalisation
============================== ======= ====================================================
scoremri_fastmri_knee_320      ncsnpp  single-coil knee image 320x320. Trained on magnitude
                                       images in [0, 1] (per-slice max scaling); applied to
                                       complex images part by part (`SplitChannels`):
                                       divide by max |image|. ``normalization="max"``.
dds_fastmri_knee_320_complex   adm     complex knee image 320x320 as 2 channels (real, imag),
                                       divided by max |image| (DDS test slices; inferred,
                                       the files were not inspected). ``"max"``.
dds_aapm_256                   adm     real CT slice 256x256 (AAPM 2016), attenuation scaled
                                       to [0, 1] (inferred from DDS's [0, 1] PSNR). ``"max"``.
fastmri_unet_leaderboard       unet    centre-cropped magnitude (RSS) image, instance-
                                       normalised (mean/std, eps 1e-11) and clamped to
                                       [-6, 6]; output * std + mean (`normalize_unet_input`).
fastmri_varnet_leaderboard     varnet  raw multi-coil k-space as stored in the fastMRI files
                                       (no scaling), bool column mask.
============================== ======= ====================================================

``normalization="max"`` means ``x_prior = image / max|image|``; the priors returned here
implement it in `estimate_scale` (`priors.base.Prior.estimate_scale` knows only "p99"/"fixed").
The published weight files are not distributed with this package.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from .base import PriorInfo, VEScorePrior, VPEpsilonPrior, linear_beta_alphas_cumprod
from .networks.adm import ADMConfig, ADMUNet
from .networks.fastmri_unet import Unet, UnetConfig
from .networks.ncsnpp import NCSNpp, NCSNppConfig, SplitChannels
from .networks.varnet import VarNet, VarNetConfig

FAMILIES = ("ncsnpp", "adm", "unet", "varnet")
NetworkConfig = Union[NCSNppConfig, ADMConfig, UnetConfig, VarNetConfig]

# DDS / DDPM schedule of the ADM priors: linear beta from 1e-4 to 0.02 over 1000 steps.
VP_NUM_STEPS, VP_BETA_START, VP_BETA_END = 1000, 1e-4, 0.02


class CheckpointError(ValueError):
    """A checkpoint does not fit the network; lists the missing, unexpected and mis-shaped keys."""

    def __init__(self, message: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[str] = ()):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        parts = [message]
        for label, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                            ("shape mismatches", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        super().__init__("; ".join(parts))


# ---------------------------------------------------------------------------
# named configurations of the published models
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedConfig:
    """A published model: its family, architecture, prior metadata and where the weights come from."""

    family: str
    config: NetworkConfig
    info: PriorInfo | None
    source: str


def _vp_sigma_range() -> tuple[float, float]:
    a = linear_beta_alphas_cumprod(VP_NUM_STEPS, VP_BETA_START, VP_BETA_END)
    s = ((1 - a) / a).sqrt()
    return float(s[0]), float(s[-1])


def _named_configs() -> dict[str, NamedConfig]:
    vp_min, vp_max = _vp_sigma_range()
    vp_extra = {"schedule": f"linear beta {VP_BETA_START}..{VP_BETA_END}, {VP_NUM_STEPS} steps",
                "output": "first half of the channels is epsilon (learn_sigma)"}
    return {
        "scoremri_fastmri_knee_320": NamedConfig(
            "ncsnpp", NCSNppConfig(),
            PriorInfo(name="scoremri-fastmri-knee-320", value_kind="complex", modality="mri", normalization="max",
                      sigma_min=0.01, sigma_max=378.0, resolution=320,
                      trained_on="fastMRI knee single-coil magnitude images, 320x320, in [0, 1] (score-MRI)",
                      extra={"network_channels": 1,
                             "complex_handling": "real and imaginary parts run separately through the 1-channel net",
                             "input_mapping": "centered=False: the net maps x -> 2x - 1 internally"}),
            "HJ-harry/score-MRI weights/checkpoint_95.pth (score_sde container, EMA weights)"),
        "dds_fastmri_knee_320_complex": NamedConfig(
            "adm", ADMConfig(image_size=320, in_channels=2, out_channels=4, attention_ds=(20,)),
            PriorInfo(name="dds-fastmri-knee-320-complex", value_kind="complex", modality="mri", normalization="max",
                      sigma_min=vp_min, sigma_max=vp_max, resolution=320,
                      trained_on="fastMRI knee complex images, 320x320, real/imag channels (DDS)", extra=vp_extra),
            "HJ-harry/DDS fastmri_knee_320_complex_1m.pt (plain state dict)"),
        "dds_aapm_256": NamedConfig(
            "adm", ADMConfig(image_size=256, in_channels=1, out_channels=2, attention_ds=(16,)),
            PriorInfo(name="dds-aapm-256", value_kind="real", modality="ct", normalization="max",
                      sigma_min=vp_min, sigma_max=vp_max, resolution=256,
                      trained_on="AAPM 2016 low-dose CT challenge slices, 256x256, scaled to [0, 1] (DDS)",
                      extra=vp_extra),
            "HJ-harry/DDS AAPM256_1M.pt (plain state dict)"),
        "fastmri_unet_leaderboard": NamedConfig(
            "unet", UnetConfig(in_chans=1, out_chans=1, chans=256, num_pool_layers=4, drop_prob=0.0), None,
            "facebookresearch/fastMRI {knee_sc,knee_mc,brain}_leaderboard_state_dict.pt (plain state dict); "
            "input: instance-normalised magnitude, clamped to [-6, 6]"),
        "fastmri_varnet_leaderboard": NamedConfig(
            "varnet", VarNetConfig(num_cascades=12, sens_chans=8, sens_pools=4, chans=18, pools=4), None,
            "facebookresearch/fastMRI {knee,brain}_leaderboard_state_dict.pt (plain state dict); "
            "input: raw multi-coil k-space"),
    }


NAMED_CONFIGS: Mapping[str, NamedConfig] = MappingProxyType(_named_configs())


# ---------------------------------------------------------------------------
# configs and networks
# ---------------------------------------------------------------------------
def _check_family(family: str) -> str:
    fam = family.lower()
    if fam not in FAMILIES:
        raise ValueError(f"unknown network family '{family}'; choose one of {', '.join(FAMILIES)}")
    return fam


def resolve_config(family: str, config: str | NetworkConfig | Mapping[str, Any]) -> NetworkConfig:
    """The architecture config for ``family`` from a `NAMED_CONFIGS` name, a config object or a dict.

    Dicts may be the original projects' own: a nested score_sde config (``data``/``model``) for
    ncsnpp, DDS ``create_model`` keyword arguments (YAML values) for adm, or our field names.
    """
    fam = _check_family(family)
    if isinstance(config, str):
        if config not in NAMED_CONFIGS:
            raise ValueError(f"unknown named config '{config}'; known: {', '.join(NAMED_CONFIGS)}")
        named = NAMED_CONFIGS[config]
        if named.family != fam:
            raise ValueError(f"named config '{config}' is a {named.family} model, not {fam}")
        return named.config
    expected = {"ncsnpp": NCSNppConfig, "adm": ADMConfig, "unet": UnetConfig, "varnet": VarNetConfig}[fam]
    if isinstance(config, expected):
        return config
    if isinstance(config, Mapping):
        d = dict(config)
        if fam == "ncsnpp" and "model" in d and "data" in d:
            return NCSNppConfig.from_score_sde(d)
        if fam == "adm" and "num_channels" in d:
            return ADMConfig.from_create_model_kwargs(d)
        names = {f.name for f in dataclasses.fields(expected)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{fam} config has unknown fields {unknown}; allowed: {sorted(names)}")
        return expected(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    raise TypeError(f"config must be a name, a {expected.__name__} or a dict, got {type(config).__name__}")


def build_network(family: str, config: str | NetworkConfig | Mapping[str, Any],
                  device: torch.device | str | None = None) -> nn.Module:
    """Instantiate the network of ``family`` (randomly initialised).

    ``device="meta"`` allocates no memory: use it to inspect keys and shapes of the full-size models.
    """
    fam = _check_family(family)
    cfg = resolve_config(fam, config)
    with torch.device("cpu" if device is None else device):
        if fam == "ncsnpp":
            return NCSNpp(cfg)  # type: ignore[arg-type]
        if fam == "adm":
            return ADMUNet(cfg)  # type: ignore[arg-type]
        if fam == "unet":
            return Unet.from_config(cfg)  # type: ignore[arg-type]
        return VarNet.from_config(cfg)  # type: ignore[arg-type]


def _shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def infer_named_config(family: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """The `NAMED_CONFIGS` entry of ``family`` whose keys and shapes equal ``state_dict``'s."""
    fam = _check_family(family)
    shapes = _shapes(state_dict)
    shapes.pop("sigmas", None)
    candidates = [n for n, c in NAMED_CONFIGS.items() if c.family == fam]
    best: tuple[int, str, list[str], list[str], list[str]] | None = None
    for name in candidates:
        ref = _shapes(build_network(fam, name, device="meta").state_dict())
        ref.pop("sigmas", None)
        if ref == shapes:
            return name
        missing = [k for k in ref if k not in shapes]
        unexpected = [k for k in shapes if k not in ref]
        mismatched = [f"{k} (checkpoint {shapes[k]} vs {name} {ref[k]})"
                      for k in shapes if k in ref and shapes[k] != ref[k]]
        n_diff = len(missing) + len(unexpected) + len(mismatched)
        if best is None or n_diff < best[0]:
            best = (n_diff, name, missing, unexpected, mismatched)
    assert best is not None
    raise CheckpointError(f"the {fam} checkpoint matches none of the published configs ({', '.join(candidates)}); "
                          f"pass config= with its architecture. Differences from the closest, {best[1]}",
                          best[2], best[3], best[4])


# ---------------------------------------------------------------------------
# reading containers
# ---------------------------------------------------------------------------
def read_checkpoint(path: str | Path, weights_only: bool = True) -> Any:
    """``torch.load`` on CPU; with ``weights_only`` only tensors and plain containers are accepted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... depending on the file
        hint = (" The file holds Python objects besides tensors; if you trust its origin, pass weights_only=False."
                if weights_only else "")
        raise CheckpointError(f"cannot read {path}: {err}.{hint}") from err


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_common_prefix(sd: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    for p in prefixes:
        if all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return dict(sd)


def apply_ema(state_dict: dict[str, torch.Tensor], shadow_params: Sequence[torch.Tensor],
              model: nn.Module) -> dict[str, torch.Tensor]:
    """Replace the trainable parameters of ``state_dict`` by the EMA ``shadow_params``.

    ``shadow_params[i]`` belongs to the i-th parameter of ``model.parameters()`` with
    ``requires_grad`` (score_sde's ``ExponentialMovingAverage`` order).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if len(shadow_params) != len(names):
        raise CheckpointError(f"the EMA holds {len(shadow_params)} tensors but the network has {len(names)} "
                              f"trainable parameters: the checkpoint belongs to another configuration")
    params = dict(model.named_parameters())
    mismatched = [f"{n} (EMA {tuple(s.shape)} vs network {tuple(params[n].shape)})"
                  for n, s in zip(names, shadow_params) if tuple(s.shape) != tuple(params[n].shape)]
    if mismatched:
        raise CheckpointError("EMA tensors do not fit the network's parameters in registration order",
                              mismatched=mismatched)
    out = dict(state_dict)
    out.update(zip(names, shadow_params))
    return out


def extract_state_dict(obj: Any, family: str, model: nn.Module, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The network state dict held by a checkpoint container (see the module docstring)."""
    fam = _check_family(family)
    if isinstance(obj, Mapping) and "model" in obj and "ema" in obj:  # score_sde container
        sd = _strip_common_prefix(obj["model"], ("module.",))
        shadow = obj["ema"].get("shadow_params") if isinstance(obj["ema"], Mapping) else None
        if prefer_ema and shadow is not None:
            sd = apply_ema(sd, shadow, model)
    elif isinstance(obj, Mapping) and _is_tensor_dict(obj.get("state_dict")):  # Lightning
        sd = _strip_common_prefix(obj["state_dict"], ("module.", "model.", "unet.", "varnet.", "net."))
    elif _is_tensor_dict(obj):
        sd = _strip_common_prefix(obj, ("module.",))
    else:
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"unrecognised checkpoint container (top level: {keys}); expected a state dict, "
                              f"a score_sde checkpoint with 'model' and 'ema', or a {{'state_dict': ...}} wrapper")
    if fam == "ncsnpp":
        sd.pop("sigmas", None)
        sd["sigmas"] = NCSNpp.make_sigmas(model.config)  # type: ignore[arg-type]
    return sd


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` that raises `CheckpointError` naming every bad key first."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k} (checkpoint {tuple(v.shape)} vs network {tuple(own[k].shape)})"
                  for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}", missing, unexpected, mismatched)
    model.load_state_dict(state_dict, strict=True, assign=assign)


# ---------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------
def load_network(path: str | Path, family: str, config: str | NetworkConfig | Mapping[str, Any] | None = None, *,
                 prefer_ema: bool = True, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 weights_only: bool = True) -> nn.Module:
    """Build the network of ``family`` and load the weights of the checkpoint at ``path`` (eval mode).

    ``config=None`` picks the published config whose keys and shapes match the checkpoint.
    ``dtype`` None keeps the checkpoint's dtypes.
    """
    fam = _check_family(family)
    obj = read_checkpoint(path, weights_only=weights_only)
    if config is None:
        probe = build_network(fam, next(n for n, c in NAMED_CONFIGS.items() if c.family == fam), device="meta")
        config = infer_named_config(fam, extract_state_dict(obj, fam, probe, prefer_ema=False))
    net = build_network(fam, config, device="meta")
    sd = extract_state_dict(obj, fam, net, prefer_ema=prefer_ema)
    load_state_dict_checked(net, sd, assign=True)
    net = net.to(device=device)
    if dtype is not None:
        net = net.to(dtype=dtype)
    return net.eval()


def default_info(family: str, config: NetworkConfig, value_kind: str | None = None) -> PriorInfo:
    """Prior metadata for a network that is not one of `NAMED_CONFIGS`."""
    if isinstance(config, NCSNppConfig):
        return PriorInfo(name="ncsnpp-checkpoint", value_kind="complex" if value_kind is None else value_kind, modality="mri",
                         normalization="max", sigma_min=config.sigma_min, sigma_max=config.sigma_max,
                         resolution=config.image_size, trained_on="unknown (user checkpoint)")
    if isinstance(config, ADMConfig):
        lo, hi = _vp_sigma_range()
        kind = value_kind if value_kind is not None else ("complex" if config.in_channels == 2 else "real")
        return PriorInfo(name="adm-checkpoint", value_kind=kind, modality="mri" if kind == "complex" else "ct",
                         normalization="max", sigma_min=lo, sigma_max=hi, resolution=config.image_size,
                         trained_on="unknown (user checkpoint)")
    raise ValueError(f"{family} networks are not priors")


def wrap_prior(net: nn.Module, info: PriorInfo) -> VEScorePrior | VPEpsilonPrior:
    """Wrap an `NCSNpp` as a VE score prior or an `ADMUNet` as a VP epsilon prior.

    A 1-channel NCSN++ used with ``info.value_kind == "complex"`` runs the real and imaginary
    parts separately (`SplitChannels`). The ADM prior uses the linear beta schedule 1e-4..0.02
    over 1000 steps with integer timesteps.
    """
    channels = 2 if info.value_kind == "complex" else 1
    if isinstance(net, NCSNpp):
        c = net.config.num_channels
        if c == channels:
            return VEScorePrior(net, info)
        if c == 1:
            return VEScorePrior(SplitChannels(net, 1), info)
        raise ValueError(f"a {c}-channel NCSN++ cannot be a {info.value_kind} prior")
    if isinstance(net, ADMUNet):
        if net.config.in_channels != channels:
            raise ValueError(f"an ADM with {net.config.in_channels} input channels cannot be a {info.value_kind} prior")
        abar = linear_beta_alphas_cumprod(VP_NUM_STEPS, VP_BETA_START, VP_BETA_END)
        return VPEpsilonPrior(net, info, abar, integer_timesteps=True)
    raise TypeError(f"cannot make a prior from {type(net).__name__}; expected NCSNpp or ADMUNet")


def load_checkpoint(path: str | Path, family: str, config: str | NetworkConfig | Mapping[str, Any] | None = None, *,
                    value_kind: str | None = None, info: PriorInfo | None = None, prefer_ema: bool = True,
                    device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    weights_only: bool = True) -> VEScorePrior | VPEpsilonPrior | nn.Module:
    """Load a published (or compatible) checkpoint.

    Args:
        path: the checkpoint file.
        family: ``"ncsnpp"`` (score-MRI), ``"adm"`` (DDS), ``"unet"`` or ``"varnet"`` (fastMRI).
        config: a `NAMED_CONFIGS` name, a config object or dict (see `resolve_config`); None picks
            the published config whose keys and shapes match the file.
        value_kind: ``"complex"`` or ``"real"`` for priors; default from the named config
            (complex for a 1-channel NCSN++, by input channels for ADM).
        info: prior metadata overriding the default of the named config.
        prefer_ema: use the EMA weights of a score_sde container.
        device, dtype: where and in which dtype to put the network (dtype None: as stored).
        weights_only: refuse pickled Python objects (see `read_checkpoint`).

    Returns:
        A `Prior` (`VEScorePrior` for ncsnpp, `VPEpsilonPrior` for adm) in eval mode, or the bare
        network (`Unet`, `VarNet`) for the fastMRI families.

    Raises:
        CheckpointError: the file is not a known container or does not fit the network
            (missing / unexpected / mis-shaped keys are listed).
    """
    fam = _check_family(family)
    net = load_network(path, fam, config, prefer_ema=prefer_ema, device=device, dtype=dtype,
                       weights_only=weights_only)
    if fam in ("unet", "varnet"):
        return net
    cfg = net.config  # type: ignore[union-attr]
    if info is None:
        named = next((c for c in NAMED_CONFIGS.values() if c.family == fam and c.config == cfg), None)
        info = named.info if named is not None and named.info is not None else default_info(fam, cfg, value_kind)
    if value_kind is not None and value_kind != info.value_kind:
        info = dataclasses.replace(info, value_kind=value_kind)
    return wrap_prior(net, info).eval()
