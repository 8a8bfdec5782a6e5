"""End-to-end variational network (Sriram et al. 2020, "End-to-end variational networks for
accelerated MRI reconstruction"), parameter-compatible with ``fastmri.models.VarNet`` (0.3.0).

Keys: ``sens_net.norm_unet.unet.*`` then ``cascades.i.dc_weight`` and ``cascades.i.model.unet.*``;
fastMRI's leaderboard files (``VarNet(num_cascades=12, sens_chans=8, sens_pools=4, chans=18,
pools=4)``) load with ``strict=True``.

Data layout (fastMRI's): k-space is the real view of complex data, ``float [B, coils, rows, cols, 2]``,
zero-filled where not sampled, at the raw scale of the fastMRI files (no normalisation: every
U-Net normalises its own input). ``mask`` is bool ``[B, 1, 1, cols, 1]``. The output is the
root-sum-of-squares magnitude image ``float [B, rows, cols]``, not cropped (fastMRI's inference
script centre-crops it to the reconstruction size, e.g. 320x320).

FFTs are centred and orthonormal (`operators.fft.fft2c` over rows and columns).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from operators.fft import fft2c, ifft2c

from .fastmri_unet import Unet


@dataclass(frozen=True)
class VarNetConfig:
    """Constructor arguments of `VarNet` (defaults: the fastMRI leaderboard VarNet).

    num_cascades: unrolled cascades; sens_chans/sens_pools: the sensitivity model's U-Net (first-level channels,
    pooling layers); chans/pools: each cascade's U-Net; mask_center: the sensitivity model sees only the
    low-frequency centre of k-space.
    """

    num_cascades: int = 12
    sens_chans: int = 8
    sens_pools: int = 4
    chans: int = 18
    pools: int = 4
    mask_center: bool = True


# ---------------------------------------------------------------------------
# real-view complex helpers: tensors [..., 2] holding (real, imag)
# ---------------------------------------------------------------------------
def _fft2c_rv(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(fft2c(torch.view_as_complex(x.contiguous())))


def _ifft2c_rv(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(ifft2c(torch.view_as_complex(x.contiguous())))


def _complex_mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    re = x[..., 0] * y[..., 0] - x[..., 1] * y[..., 1]
    im = x[..., 0] * y[..., 1] + x[..., 1] * y[..., 0]
    return torch.stack((re, im), dim=-1)


def _complex_conj(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((x[..., 0], -x[..., 1]), dim=-1)


def _rss_complex(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.sqrt((x**2).sum(dim=-1).sum(dim))


# ---------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------
class NormUnet(nn.Module):
    """U-Net on a normalised complex image: x float [B, C, H, W, 2] -> same shape.

    The real and imaginary channel groups are each standardised (mean, unbiased std over all
    their pixels), zero-padded to multiples of 16, passed through `Unet` with 2C channels
    ([real of all C, imag of all C]), unpadded and un-standardised.
    """

    def __init__(self, chans: int, num_pools: int, in_chans: int = 2, out_chans: int = 2, drop_prob: float = 0.0):
        super().__init__()
        self.unet = Unet(in_chans=in_chans, out_chans=out_chans, chans=chans, num_pool_layers=num_pools,
                         drop_prob=drop_prob)

    @staticmethod
    def _norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        flat = x.reshape(b, 2, -1)
        mean = flat.mean(dim=2).view(b, 2, 1, 1, 1)
        std = flat.std(dim=2).view(b, 2, 1, 1, 1)
        xn = (x.view(b, 2, c // 2, h, w) - mean) / std
        return xn.view(b, c, h, w), mean, std

    @staticmethod
    def _pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[list[int], list[int], int, int]]:
        h, w = x.shape[-2:]
        w_mult, h_mult = ((w - 1) | 15) + 1, ((h - 1) | 15) + 1
        w_pad = [math.floor((w_mult - w) / 2), math.ceil((w_mult - w) / 2)]
        h_pad = [math.floor((h_mult - h) / 2), math.ceil((h_mult - h) / 2)]
        return F.pad(x, w_pad + h_pad), (h_pad, w_pad, h_mult, w_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 2:
            raise ValueError(f"NormUnet expects a real-view complex tensor [B, C, H, W, 2], got {tuple(x.shape)}")
        b, c, h, w, _ = x.shape
        y = x.permute(0, 4, 1, 2, 3).reshape(b, 2 * c, h, w)
        y, mean, std = self._norm(y)
        y, (h_pad, w_pad, h_mult, w_mult) = self._pad(y)
        y = self.unet(y)
        y = y[..., h_pad[0]:h_mult - h_pad[1], w_pad[0]:w_mult - w_pad[1]]
        y = (y.view(b, 2, c, h, w) * std + mean)
        return y.permute(0, 2, 3, 4, 1).contiguous()


def low_frequency_band(mask: torch.Tensor, num_low_frequencies: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Start column and width of the fully sampled k-space centre, per batch item (int64 [B] each).

    With ``num_low_frequencies`` None (or 0) the width is inferred from ``mask`` (bool
    [B, 1, 1, cols, 1]) as fastMRI does: the run of sampled columns on each side of ``cols // 2``,
    width ``2 * min(left, right)``, at least 1. Start is ``(cols - width + 1) // 2``.
    """
    if mask.dim() != 5:
        raise ValueError(f"mask must be [B, 1, 1, cols, 1], got {tuple(mask.shape)}")
    if num_low_frequencies is None or num_low_frequencies == 0:
        cols = mask[:, 0, 0, :, 0].to(torch.int8)
        cent = cols.shape[1] // 2
        left = torch.argmin(cols[:, :cent].flip(1), dim=1)
        right = torch.argmin(cols[:, cent:], dim=1)
        width = torch.max(2 * torch.min(left, right), torch.ones_like(left))
    else:
        width = num_low_frequencies * torch.ones(mask.shape[0], dtype=torch.long, device=mask.device)
    start = (mask.shape[-2] - width + 1) // 2
    return start.long(), width.long()


class SensitivityModel(nn.Module):
    """Coil sensitivities from the k-space centre: masked_kspace [B, C, H, W, 2] -> maps [B, C, H, W, 2].

    Keeps only the centre columns, inverse-FFTs each coil, refines each coil image with a
    `NormUnet` (coils folded into the batch) and divides by the RSS over coils.
    """

    def __init__(self, chans: int, num_pools: int, in_chans: int = 2, out_chans: int = 2, drop_prob: float = 0.0,
                 mask_center: bool = True):
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUnet(chans, num_pools, in_chans=in_chans, out_chans=out_chans, drop_prob=drop_prob)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | None = None) -> torch.Tensor:
        if self.mask_center:
            start, width = low_frequency_band(mask, num_low_frequencies)
            col = torch.arange(masked_kspace.shape[-2], device=masked_kspace.device)
            keep = (col[None, :] >= start[:, None]) & (col[None, :] < (start + width)[:, None])
            masked_kspace = torch.where(keep[:, None, None, :, None], masked_kspace,
                                        torch.zeros((), dtype=masked_kspace.dtype, device=masked_kspace.device))
        images = _ifft2c_rv(masked_kspace)
        b, c, h, w, _ = images.shape
        maps = self.norm_unet(images.reshape(b * c, 1, h, w, 2)).reshape(b, c, h, w, 2)
        return maps / _rss_complex(maps, dim=1).unsqueeze(-1).unsqueeze(1)


class VarNetBlock(nn.Module):
    """One cascade: ``k - where(mask, k - k0, 0) * dc_weight - F S R(sum_c conj(S_c) F^-1 k_c)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    @staticmethod
    def sens_expand(x: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        return _fft2c_rv(_complex_mul(x, sens_maps))

    @staticmethod
    def sens_reduce(k: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        return _complex_mul(_ifft2c_rv(k), _complex_conj(sens_maps)).sum(dim=1, keepdim=True)

    def forward(self, current_kspace: torch.Tensor, ref_kspace: torch.Tensor, mask: torch.Tensor,
                sens_maps: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(1, 1, 1, 1, 1, dtype=current_kspace.dtype, device=current_kspace.device)
        soft_dc = torch.where(mask, current_kspace - ref_kspace, zero) * self.dc_weight
        model_term = self.sens_expand(self.model(self.sens_reduce(current_kspace, sens_maps)), sens_maps)
        return current_kspace - soft_dc - model_term


class VarNet(nn.Module):
    """E2E-VarNet: (masked_kspace [B, C, H, W, 2], bool mask [B, 1, 1, W, 1]) -> RSS image [B, H, W]."""

    def __init__(self, num_cascades: int = 12, sens_chans: int = 8, sens_pools: int = 4, chans: int = 18,
                 pools: int = 4, mask_center: bool = True):
        super().__init__()
        self.sens_net = SensitivityModel(chans=sens_chans, num_pools=sens_pools, mask_center=mask_center)
        self.cascades = nn.ModuleList([VarNetBlock(NormUnet(chans, pools)) for _ in range(num_cascades)])

    @classmethod
    def from_config(cls, config: VarNetConfig) -> "VarNet":
        return cls(config.num_cascades, config.sens_chans, config.sens_pools, config.chans, config.pools,
                   config.mask_center)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                num_low_frequencies: int | None = None) -> torch.Tensor:
        if masked_kspace.dim() != 5 or masked_kspace.shape[-1] != 2:
            raise ValueError(f"masked_kspace must be [B, coils, rows, cols, 2], got {tuple(masked_kspace.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (fastMRI's convention), got {mask.dtype}")
        sens_maps = self.sens_net(masked_kspace, mask, num_low_frequencies)
        kspace = masked_kspace.clone()
        for cascade in self.cascades:
            kspace = cascade(kspace, masked_kspace, mask, sens_maps)
        image = torch.sqrt((_ifft2c_rv(kspace) ** 2).sum(dim=-1))
        return torch.sqrt((image**2).sum(dim=1))
