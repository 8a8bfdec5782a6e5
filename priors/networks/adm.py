"""ADM U-Net (Dhariwal & Nichol 2021, "Diffusion models beat GANs"), as used by DDS.

A parameter-compatible re-implementation of ``guided_diffusion/unet.py`` ``UNetModel`` in the
form DDS (Chung, Lee & Ye 2024, "Decomposed diffusion sampler for accelerating large-scale
inverse problems") trains it: sinusoidal embedding of integer-valued timesteps 0..999, residual
blocks with scale-shift GroupNorm conditioning, residual blocks for up/down sampling
(``resblock_updown``), multi-head attention whose head count is ``channels // num_head_channels``
(legacy QKV order), and a ``learn_sigma`` output of ``2 * in_channels`` channels whose first half
is the noise prediction epsilon. Class conditioning is not implemented.

Keys and shapes equal guided-diffusion's (``time_embed.{0,2}``, ``input_blocks.N.M.*``,
``middle_block.{0,1,2}.*``, ``output_blocks.N.M.*``, ``out.{0,2}``), so DDS's plain state dicts
load with ``strict=True``.

Call convention: ``ADMUNet(config)(x, t)`` with ``x: float [B, C, H, W]`` and ``t: [B]``
integer-valued timesteps (any dtype); returns ``float [B, out_channels, H, W]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .ncsnpp import UnsupportedConfigError, check_image_batch

# DDS / guided-diffusion ``create_model`` default channel multipliers by image size.
_DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    320: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class ADMConfig:
    """Constructor values of an ADM U-Net (defaults: DDS ``AAPM256.yml``).

    Attributes:
        image_size: training resolution (only used to derive defaults; the net is convolutional).
        in_channels: image channels (2 = real/imag of a complex image, 1 = real image).
        model_channels: base width; level ``i`` has ``int(channel_mult[i] * model_channels)``.
        out_channels: ``2 * in_channels`` with ``learn_sigma`` (epsilon, then variance values).
        num_res_blocks: residual blocks per level (one more per level in the up path).
        attention_ds: downsample factors (1, 2, 4, ...) at which attention blocks are built;
            the middle block always has one.
        dropout: dropout probability.
        channel_mult: per-level channel multipliers.
        num_heads: heads when ``num_head_channels == -1``.
        num_head_channels: channels per head (overrides ``num_heads``), -1 to use ``num_heads``.
        num_heads_upsample: heads in the up path (-1: same as ``num_heads``).
        use_scale_shift_norm: FiLM-like ``GN(h) * (1 + scale) + shift`` conditioning.
        resblock_updown: residual blocks (not plain conv/pool layers) for up/down sampling.
        conv_resample: learned conv in the plain up/down layers (only without resblock_updown).
        use_new_attention_order: split q/k/v before heads (``QKVAttention``) instead of after.
    """

    image_size: int = 256
    in_channels: int = 1
    model_channels: int = 256
    out_channels: int = 2
    num_res_blocks: int = 1
    attention_ds: tuple[int, ...] = (16,)
    dropout: float = 0.0
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    use_new_attention_order: bool = False

    @classmethod
    def from_create_model_kwargs(cls, kwargs: Mapping[str, Any]) -> "ADMConfig":
        """Translate the keyword arguments of DDS's ``script_util.create_model`` (its YAML values).

        ``channel_mult`` is a comma-separated string ("" -> the default for ``image_size``),
        ``attention_resolutions`` a comma-separated string of feature-map sizes converted to
        downsample factors ``image_size // r``; ``out_channels = 2 * in_channels`` when
        ``learn_sigma``. Keys create_model ignores (``type``, ``var_type``, ...) are ignored.
        """
        kw = dict(kwargs)
        if kw.get("class_cond", False):
            raise UnsupportedConfigError("class-conditional ADM (class_cond=True) is not supported")
        image_size = int(kw["image_size"])
        cm = kw.get("channel_mult", "")
        if isinstance(cm, str):
            if cm == "":
                if image_size not in _DEFAULT_CHANNEL_MULT:
                    raise UnsupportedConfigError(f"no default channel_mult for image_size {image_size}; give one")
                channel_mult = _DEFAULT_CHANNEL_MULT[image_size]
            else:
                channel_mult = tuple(float(m) if "." in m else int(m) for m in cm.split(","))
        else:
            channel_mult = tuple(cm)
        attn = kw.get("attention_resolutions", "16")
        res = [int(r) for r in attn.split(",")] if isinstance(attn, str) else [int(r) for r in attn]
        in_channels = int(kw.get("in_channels", 3))
        learn_sigma = bool(kw.get("learn_sigma", False))
        return cls(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=int(kw["num_channels"]),
            out_channels=2 * in_channels if learn_sigma else in_channels,
            num_res_blocks=int(kw["num_res_blocks"]),
            attention_ds=tuple(image_size // r for r in res),
            dropout=float(kw.get("dropout", 0.0)),
            channel_mult=channel_mult,
            num_heads=int(kw.get("num_heads", 1)),
            num_head_channels=int(kw.get("num_head_channels", -1)),
            num_heads_upsample=int(kw.get("num_heads_upsample", -1)),
            use_scale_shift_norm=bool(kw.get("use_scale_shift_norm", False)),
            resblock_updown=bool(kw.get("resblock_updown", False)),
            use_new_attention_order=bool(kw.get("use_new_attention_order", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32,
                       max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]``, ``f_i = max_period^(-i/half)``, i < half = dim//2.

    t: [B] (integer-valued steps, any dtype) -> ``dtype`` [B, dim]. The frequencies are built in
    float32 as guided-diffusion does; ``t`` is cast to ``dtype`` (float32 there).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm that computes in at least float32 (half inputs are upcast)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


class EmbSequential(nn.Sequential):
    """``nn.Sequential`` that also passes the timestep embedding to the residual blocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2 upsampling, optionally followed by a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """x2 downsampling: 3x3 stride-2 conv or 2x2 average pooling (key ``op``)."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block with timestep conditioning; optional x2 up/down sampling of both paths.

    h = conv(resample(SiLU(GN(x)))); h = GN(h) * (1 + scale) + shift (or h + emb);
    h = conv(dropout(SiLU(h))); out = skip(resample(x)) + h (no rescaling).
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))
        self.use_scale_shift_norm = use_scale_shift_norm

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _qkv_attention(qkv: torch.Tensor, n_heads: int, legacy: bool) -> torch.Tensor:
    """Multi-head attention over T positions. qkv: [B, 3 * heads * ch, T] -> [B, heads * ch, T].

    legacy (``QKVAttentionLegacy``): channels are grouped head-major, each head's block is
    [q | k | v]; otherwise (``QKVAttention``) the tensor is [q | k | v] with heads inside each.
    """
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    if legacy:
        q, k, v = qkv.reshape(bs * n_heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(bs * n_heads, ch, length) for z in qkv.chunk(3, dim=1))
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    if weight.dtype in (torch.float16, torch.bfloat16):
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    else:
        weight = torch.softmax(weight, dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    """Self-attention over all pixels with ``1x1`` Conv1d projections (keys norm, qkv, proj_out)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise UnsupportedConfigError(
                    f"{channels} channels are not divisible by num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        self.legacy = not new_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = _qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------
class ADMUNet(nn.Module):
    """guided-diffusion ``UNetModel`` (unconditional). See the module docstring."""

    def __init__(self, config: ADMConfig | None = None):
        super().__init__()
        cfg = ADMConfig() if config is None else config
        self.config = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def resblock(cin: int, cout: int | None = None, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(cin, emb_dim, cfg.dropout, cout, cfg.use_scale_shift_norm, up=up, down=down)

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.use_new_attention_order)

        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([EmbSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in cfg.attention_ds:
                    layers.append(attention(ch, cfg.num_heads))
                self.input_blocks.append(EmbSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = resblock(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(EmbSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = EmbSequential(resblock(ch), attention(ch, cfg.num_heads), resblock(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in cfg.attention_ds:
                    layers.append(attention(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if cfg.resblock_updown
                                  else Upsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x: float [B, C_in, H, W]; timesteps: [B] in 0..999 -> float [B, C_out, H, W]."""
        self._check_input(x, timesteps)
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels, dtype))
        h = x.to(dtype)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))

    def _check_input(self, x: torch.Tensor, t: torch.Tensor) -> None:
        check_image_batch("ADMUNet", x, t, "timesteps", self.config.in_channels, len(self.config.channel_mult))
