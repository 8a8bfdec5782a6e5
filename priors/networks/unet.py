"""A small noise-conditional U-Net for EDM-preconditioned score priors.

Fully convolutional: trained on patches, applied to whole images of any ``H, W`` (inputs are
padded internally to a multiple of ``2**(levels-1)`` and the output is cropped back).
Residual blocks with GroupNorm + SiLU and a FiLM-style noise-level embedding; optional
self-attention only at the coarsest level.

``UNet(x: float32 [B, C, H, W], c_noise: float32 [B]) -> float32 [B, C, H, W]``
(``c_noise = log(sigma) / 4`` under EDM preconditioning, see `priors.base.EDMPrior`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Architecture hyper-parameters (stored in checkpoints; ``UNet(**asdict(cfg))``)."""

    in_channels: int = 2
    out_channels: int = 2
    width: int = 32
    mults: tuple[int, ...] = (1, 2, 2)
    res_blocks: int = 1
    attention: bool = True
    emb_dim: int = 128
    groups: int = 8
    dropout: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mults"] = list(self.mults)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["mults"] = tuple(d.get("mults", (1, 2, 2)))
        return cls(**d)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(ch, groups)
    return nn.GroupNorm(g, ch)


class NoiseEmbedding(nn.Module):
    """c_noise [B] -> [B, emb_dim]: fixed Fourier features followed by a 2-layer MLP."""

    def __init__(self, emb_dim: int, n_freq: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), n_freq)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        a = c_noise.float()[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([a.sin(), a.cos()], dim=1))


class ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM by the noise embedding, GN-SiLU-conv, plus a (1x1) skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.drop(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over pixels (used only at the coarsest level)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Noise-conditional U-Net; see the module docstring. Build with ``UNet(**cfg.to_dict())``."""

    def __init__(
        self, in_channels: int = 2, out_channels: int = 2, width: int = 32, mults: tuple[int, ...] = (1, 2, 2),
        res_blocks: int = 1, attention: bool = True, emb_dim: int = 128, groups: int = 8, dropout: float = 0.0,
    ):
        super().__init__()
        self.config = UNetConfig(in_channels, out_channels, width, tuple(mults), res_blocks, attention,
                                 emb_dim, groups, dropout)
        self.levels = len(mults)
        self.embed = NoiseEmbedding(emb_dim)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        chans = [width * m for m in mults]

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [width]
        c = width
        for i, ch in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, ch, emb_dim, groups, dropout))
                c = ch
                skips.append(c)
            self.down.append(blocks)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)

        self.mid1 = ResBlock(c, c, emb_dim, groups, dropout)
        self.attn = SelfAttention(c, groups) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, groups, dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), ch, emb_dim, groups, dropout))
                c = ch
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = _norm(c, groups)
        self.out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-h0) % m, (-w0) % m
        if ph or pw:
            mode = "reflect" if ph < h0 and pw < w0 else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        emb = self.embed(c_noise)

        h = self.stem(x)
        hs = [h]
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for j, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), emb)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.out(F.silu(self.out_norm(h)))
        return h[..., :h0, :w0]
