"""NCSN++ (Song et al. 2021, "Score-based generative modeling through SDEs"), as used by score-MRI.

A parameter-compatible re-implementation of the continuous-VE variant that score-MRI
(Chung & Ye 2022, "Score-based diffusion models for accelerated MRI") trained on fastMRI knee
images: Gaussian Fourier noise embedding of ``log(sigma)``, BigGAN residual blocks with FIR
up/down sampling, a residual input pyramid (``progressive_input="residual"``, combine by sum),
a single-head attention block in the middle (and at the configured resolutions), no output
pyramid, ``centered=False`` input mapping ``x -> 2x - 1`` and ``scale_by_sigma``.

Parameter names, shapes and registration order equal those of ``models/ncsnpp.py`` in
score_sde_pytorch / score-MRI, so their state dicts load with ``strict=True``:
``sigmas`` (float64 buffer, unused by the Fourier path), then ``all_modules.{i}.*``.

Call convention: ``NCSNpp(config)(x, sigma)`` with ``x: float [B, C, H, W]`` and
``sigma: float [B]`` (noise standard deviations, not times); returns the score
``~ -noise / sigma`` with the shape of ``x``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedConfigError(ValueError):
    """A network configuration asks for a variant this implementation does not provide."""


def check_image_batch(net: str, x: torch.Tensor, cond: torch.Tensor, cond_name: str, channels: int,
                      levels: int) -> None:
    """Raise `ValueError` unless x is [B, channels, H, W] with H and W divisible by ``2**(levels - 1)`` and the
    per-image conditioning `cond` (noise level or timestep, named `cond_name` in the message) is [B]."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{net} expects x of shape [B, {channels}, H, W], got {tuple(x.shape)}")
    if cond.shape != (x.shape[0],):
        raise ValueError(f"{net} expects {cond_name} of shape [{x.shape[0]}], got {tuple(cond.shape)}")
    factor = 2 ** (levels - 1)
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"{net} with {levels} levels needs H and W divisible by {factor}, "
                         f"got {tuple(x.shape[-2:])}; pad or crop the image first")


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------
# The options of score_sde's NCSN++ that this implementation supports, with the only value allowed.
_FIXED_OPTIONS: dict[str, Any] = {
    "resblock_type": "biggan",
    "progressive": "none",
    "progressive_input": "residual",
    "progressive_combine": "sum",
    "embedding_type": "fourier",
    "fir": True,
    "resamp_with_conv": True,
    "conditional": True,
    "nonlinearity": "swish",
}


@dataclass(frozen=True)
class NCSNppConfig:
    """Architecture and noise range of an NCSN++ (defaults: score-MRI's fastMRI knee 320 model).

    Attributes:
        image_size: training resolution; attention placement is decided from it.
        num_channels: image channels (1 for score-MRI: real and imaginary parts run separately).
        nf: base width; level ``i`` has ``nf * ch_mult[i]`` channels.
        ch_mult: channel multipliers per resolution level.
        num_res_blocks: residual blocks per level in the down path (one more in the up path).
        attn_resolutions: feature-map sizes (``image_size // 2**level``) that get attention
            blocks; the middle block always has one.
        dropout: dropout probability (0 for inference).
        fir_kernel: separable FIR taps for up/down sampling.
        fourier_scale: std of the random Fourier frequencies ``W``.
        sigma_min, sigma_max, num_scales: the VE noise range (``sigmas`` buffer).
        centered: False means data in [0, 1], mapped to ``2x - 1`` before the first conv.
        scale_by_sigma: divide the output by sigma (the network then returns the score).
        skip_rescale: divide residual sums by sqrt(2).
    """

    image_size: int = 320
    num_channels: int = 1
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0
    sigma_min: float = 0.01
    sigma_max: float = 378.0
    num_scales: int = 2000
    centered: bool = False
    scale_by_sigma: bool = True
    skip_rescale: bool = True

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Feature-map size at each level for an ``image_size`` input."""
        return tuple(self.image_size // 2**i for i in range(self.num_levels))

    @classmethod
    def from_score_sde(cls, config: Mapping[str, Any]) -> "NCSNppConfig":
        """Build from a score_sde / score-MRI config given as a nested dict (``data``, ``model``).

        Raises:
            UnsupportedConfigError: the config selects an NCSN++ variant not implemented here
                (e.g. DDPM residual blocks, positional embedding, an output pyramid).
        """
        data, model = dict(config["data"]), dict(config["model"])
        name = str(model.get("name", "ncsnpp")).lower()
        if name != "ncsnpp":
            raise UnsupportedConfigError(f"model.name is '{name}', expected 'ncsnpp'")
        for key, wanted in _FIXED_OPTIONS.items():
            got = model.get(key, wanted)
            got = got.lower() if isinstance(got, str) else got
            if got != wanted:
                raise UnsupportedConfigError(
                    f"model.{key}={got!r} is not supported; this NCSN++ implements only {key}={wanted!r}")
        return cls(
            image_size=int(data["image_size"]),
            num_channels=int(data["num_channels"]),
            nf=int(model["nf"]),
            ch_mult=tuple(int(m) for m in model["ch_mult"]),
            num_res_blocks=int(model["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in model["attn_resolutions"]),
            dropout=float(model.get("dropout", 0.0)),
            fir_kernel=tuple(int(k) for k in model.get("fir_kernel", (1, 3, 3, 1))),
            fourier_scale=float(model.get("fourier_scale", 16.0)),
            sigma_min=float(model["sigma_min"]),
            sigma_max=float(model["sigma_max"]),
            num_scales=int(model["num_scales"]),
            centered=bool(data.get("centered", False)),
            scale_by_sigma=bool(model.get("scale_by_sigma", True)),
            skip_rescale=bool(model.get("skip_rescale", True)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------
# FIR resampling (StyleGAN2's upfirdn2d, reference CPU semantics)
# ---------------------------------------------------------------------------
def fir_kernel_2d(taps: tuple[int, ...], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    """Separable FIR kernel ``outer(taps, taps) / sum``: float ``[K, K]``."""
    k = torch.tensor(taps, dtype=torch.float64)
    k2 = torch.outer(k, k)
    return (k2 / k2.sum()).to(dtype=dtype, device=device)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, then keep every ``down``-th sample.

    x: float [B, C, H, W]; kernel: float [K, K]; ``pad = (before, after)`` is applied to both
    spatial axes (non-negative). The kernel is flipped (a true convolution), each channel is
    filtered independently. Returns [B, C, (H*up + p0 + p1 - K) // down + 1, ...].
    """
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    if up > 1:
        y = F.pad(y.reshape(b * c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        y = y.reshape(b * c, 1, h * up, w * up)
    p0, p1 = pad
    y = F.pad(y, (p0, p1, p0, p1))
    y = F.conv2d(y, torch.flip(kernel, [0, 1])[None, None].to(y.dtype))
    y = y[:, :, ::down, ::down]
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def fir_upsample_2x(x: torch.Tensor, taps: tuple[int, ...]) -> torch.Tensor:
    """x2 FIR upsampling (gain 1): [B, C, H, W] -> [B, C, 2H, 2W]."""
    k = fir_kernel_2d(taps, x.dtype, x.device) * 4
    p = k.shape[0] - 2
    return upfirdn2d(x, k, up=2, pad=((p + 1) // 2 + 1, p // 2))


def fir_downsample_2x(x: torch.Tensor, taps: tuple[int, ...]) -> torch.Tensor:
    """x2 FIR downsampling: [B, C, H, W] -> [B, C, H//2, W//2] (even H, W)."""
    k = fir_kernel_2d(taps, x.dtype, x.device)
    p = k.shape[0] - 2
    return upfirdn2d(x, k, down=2, pad=((p + 1) // 2, p // 2))


# ---------------------------------------------------------------------------
# layers (names match score_sde's layers.py / layerspp.py)
# ---------------------------------------------------------------------------
def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


class GaussianFourierProjection(nn.Module):
    """``[sin(2 pi W x), cos(2 pi W x)]`` with fixed random frequencies ``W: [E]`` (not trained).

    forward: x float [B] -> float [B, 2E].
    """

    def __init__(self, embedding_size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Evaluated left to right as in the reference: float32 rounding of these ~700 rad
        # arguments is visible in the output, so the operation order matters.
        proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class NIN(nn.Module):
    """Per-pixel linear map over channels; ``W: [C_in, C_out]`` (transposed w.r.t. a 1x1 conv)."""

    def __init__(self, in_dim: int, num_units: int):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_dim, num_units))
        self.b = nn.Parameter(torch.zeros(num_units))
        nn.init.xavier_uniform_(self.W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, C_out, H, W]."""
        y = torch.einsum("bhwc,cd->bhwd", x.permute(0, 2, 3, 1), self.W) + self.b
        return y.permute(0, 3, 1, 2)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels, residual with ``/sqrt(2)`` (skip_rescale)."""

    def __init__(self, channels: int, skip_rescale: bool = True):
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(hn), self.NIN_1(hn), self.NIN_2(hn)
        att = torch.einsum("bchw,bcij->bhwij", q, k) * (int(c) ** (-0.5))
        att = F.softmax(att.reshape(b, h, w, h * w), dim=-1).reshape(b, h, w, h, w)
        out = self.NIN_3(torch.einsum("bhwij,bcij->bchw", att, v))
        return (x + out) / math.sqrt(2.0) if self.skip_rescale else x + out


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block: GN-SiLU-[FIR resample]-conv (+ dense(temb)) -GN-SiLU-dropout-conv.

    The shortcut is FIR-resampled like the main path and gets a 1x1 conv (``Conv_2``) when the
    channel count changes or the block resamples.
    """

    def __init__(self, in_ch: int, out_ch: int | None, temb_dim: int, up: bool = False, down: bool = False,
                 dropout: float = 0.0, fir_kernel: tuple[int, ...] = (1, 3, 3, 1), skip_rescale: bool = True):
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.Conv_0 = _conv3x3(in_ch, out_ch)
        self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv3x3(out_ch, out_ch)
        if in_ch != out_ch or up or down:
            self.Conv_2 = _conv1x1(in_ch, out_ch)
        self.up, self.down = up, down
        self.fir_kernel = tuple(fir_kernel)
        self.skip_rescale = skip_rescale
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        if self.up:
            h, x = fir_upsample_2x(h, self.fir_kernel), fir_upsample_2x(x, self.fir_kernel)
        elif self.down:
            h, x = fir_downsample_2x(h, self.fir_kernel), fir_downsample_2x(x, self.fir_kernel)
        h = self.Conv_0(h)
        h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class FIRDownConv(nn.Module):
    """StyleGAN2's fused FIR-downsample + 3x3 stride-2 conv (score_sde ``up_or_down_sampling.Conv2d``)."""

    def __init__(self, in_ch: int, out_ch: int, fir_kernel: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H//2, W//2]."""
        k = fir_kernel_2d(self.fir_kernel, x.dtype, x.device)
        p = (k.shape[0] - 2) + (self.weight.shape[-1] - 1)
        x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, self.weight, stride=2, padding=0) + self.bias.reshape(1, -1, 1, 1)


class Downsample(nn.Module):
    """Input-pyramid downsampler (``layerspp.Downsample`` with fir=True, with_conv=True)."""

    def __init__(self, in_ch: int, out_ch: int, fir_kernel: tuple[int, ...]):
        super().__init__()
        self.Conv2d_0 = FIRDownConv(in_ch, out_ch, fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv2d_0(x)


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------
class NCSNpp(nn.Module):
    """NCSN++ score network (continuous VE). See the module docstring for the call convention."""

    def __init__(self, config: NCSNppConfig | None = None):
        super().__init__()
        cfg = NCSNppConfig() if config is None else config
        self.config = cfg
        self.register_buffer("sigmas", self.make_sigmas(cfg))
        self.act = nn.SiLU()
        nf, temb_dim = cfg.nf, 4 * cfg.nf
        self.attn_levels = frozenset(
            i for i, r in enumerate(cfg.level_resolutions) if r in cfg.attn_resolutions)

        def resblock(in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False):
            return ResnetBlockBigGANpp(in_ch, out_ch, temb_dim, up=up, down=down, dropout=cfg.dropout,
                                       fir_kernel=cfg.fir_kernel, skip_rescale=cfg.skip_rescale)

        def attn(ch: int) -> AttnBlockpp:
            return AttnBlockpp(ch, skip_rescale=cfg.skip_rescale)

        mods: list[nn.Module] = [
            GaussianFourierProjection(nf, cfg.fourier_scale),
            nn.Linear(2 * nf, temb_dim),
            nn.Linear(temb_dim, temb_dim),
            _conv3x3(cfg.num_channels, nf),
        ]
        skip_ch = [nf]
        in_ch, pyramid_ch = nf, cfg.num_channels
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                mods.append(resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if level in self.attn_levels:
                    mods.append(attn(in_ch))
                skip_ch.append(in_ch)
            if level != cfg.num_levels - 1:
                mods.append(resblock(in_ch, down=True))
                mods.append(Downsample(pyramid_ch, in_ch, cfg.fir_kernel))
                pyramid_ch = in_ch
                skip_ch.append(in_ch)
        mods += [resblock(in_ch), attn(in_ch), resblock(in_ch)]
        for level in reversed(range(cfg.num_levels)):
            out_ch = nf * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(resblock(in_ch + skip_ch.pop(), out_ch))
                in_ch = out_ch
            if level in self.attn_levels:
                mods.append(attn(in_ch))
            if level != 0:
                mods.append(resblock(in_ch, up=True))
        mods += [_group_norm(in_ch), _conv3x3(in_ch, cfg.num_channels)]
        self.all_modules = nn.ModuleList(mods)

    @staticmethod
    def make_sigmas(config: NCSNppConfig) -> torch.Tensor:
        """The ``sigmas`` buffer: float64 [num_scales], geometric from sigma_max down to sigma_min."""
        s = np.exp(np.linspace(np.log(config.sigma_max), np.log(config.sigma_min), config.num_scales))
        return torch.tensor(s, dtype=torch.float64)

    def noise_embedding(self, sigma: torch.Tensor) -> torch.Tensor:
        """sigma float [B] -> temb float [B, 4 nf] (Fourier features of log sigma, then the MLP)."""
        m = self.all_modules
        temb = m[0](torch.log(sigma))
        return m[2](self.act(m[1](temb)))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x: float [B, C, H, W]; sigma: float [B] -> score float [B, C, H, W]."""
        cfg = self.config
        self._check_input(x, sigma)
        temb = self.noise_embedding(sigma)
        mods: Iterator[nn.Module] = iter(self.all_modules[3:])
        if not cfg.centered:
            x = 2 * x - 1.0
        pyramid = x
        hs = [next(mods)(x)]
        for level in range(cfg.num_levels):
            for _ in range(cfg.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if level in self.attn_levels:
                    h = next(mods)(h)
                hs.append(h)
            if level != cfg.num_levels - 1:
                h = next(mods)(hs[-1], temb)
                pyramid = next(mods)(pyramid)
                pyramid = (pyramid + h) / math.sqrt(2.0) if cfg.skip_rescale else pyramid + h
                h = pyramid
                hs.append(h)
        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        for level in reversed(range(cfg.num_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if level in self.attn_levels:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h, temb)
        h = self.act(next(mods)(h))
        h = next(mods)(h)
        if cfg.scale_by_sigma:
            h = h / sigma.reshape(x.shape[0], *([1] * (x.dim() - 1)))
        return h

    def _check_input(self, x: torch.Tensor, sigma: torch.Tensor) -> None:
        check_image_batch("NCSNpp", x, sigma, "sigma", self.config.num_channels, self.config.num_levels)


class SplitChannels(nn.Module):
    """Run a C-channel network on each group of C channels separately (C = ``net_channels``).

    score-MRI trains a 1-channel NCSN++ on magnitude images and applies it to the real and the
    imaginary part of a complex image as two independent images. `VEScorePrior` packs a complex
    image as 2 channels (real, imag); wrapping the 1-channel net in ``SplitChannels(net, 1)``
    folds those channels into the batch: x [B, 2, H, W], sigma [B] -> net([2B, 1, H, W], [2B]).
    """

    def __init__(self, net: nn.Module, net_channels: int = 1):
        super().__init__()
        self.net = net
        self.net_channels = net_channels

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c % self.net_channels:
            raise ValueError(f"{c} channels cannot be split into groups of {self.net_channels}")
        groups = c // self.net_channels
        out = self.net(x.reshape(b * groups, self.net_channels, h, w), sigma.repeat_interleave(groups))
        return out.reshape(b, c, h, w)
