"""The fastMRI U-Net baseline (Ronneberger et al. 2015; Zbontar et al. 2018, "fastMRI").

Module structure, parameter names, shapes and registration order equal ``fastmri.models.Unet``
(fastmri 0.3.0), so fastMRI's published state dicts (e.g. ``knee_sc_leaderboard_state_dict.pt``,
built as ``Unet(1, 1, chans=256, num_pool_layers=4, drop_prob=0.0)``) load with ``strict=True``:
``down_sample_layers.i.layers.{0,4}``, ``conv.layers.{0,4}``, ``up_conv.*`` (registered before)
``up_transpose_conv.*``; convolutions have no bias except the final 1x1 conv.

The leaderboard U-Net expects the fastMRI ``UnetDataTransform`` input: the centre-cropped
magnitude (RSS for multi-coil) image, instance-normalised with its own mean and std
(eps 1e-11) and clamped to [-6, 6]; the output is mapped back with ``out * std + mean``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class UnetInputError(ValueError):
    """An input the U-Net cannot process (wrong channels or a spatial size too small)."""


@dataclass(frozen=True)
class UnetConfig:
    """Constructor arguments of `Unet` (defaults: the fastMRI leaderboard U-Net).

    in_chans/out_chans: image channels in and out; chans: channels of the first level, doubled at each of the
    num_pool_layers poolings; drop_prob: Dropout2d probability.
    """

    in_chans: int = 1
    out_chans: int = 1
    chans: int = 256
    num_pool_layers: int = 4
    drop_prob: float = 0.0


class ConvBlock(nn.Module):
    """Two (3x3 conv without bias, InstanceNorm, LeakyReLU(0.2), Dropout2d) layers."""

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransposeConvBlock(nn.Module):
    """x2 upsampling: 2x2 stride-2 transposed conv without bias, InstanceNorm, LeakyReLU(0.2)."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Unet(nn.Module):
    """fastMRI U-Net: image float [N, in_chans, H, W] -> float [N, out_chans, H, W].

    Channels double at each of the ``num_pool_layers`` 2x2 average-pooling steps. Odd sizes are
    handled as in fastMRI: after each transposed conv the result is reflect-padded by one pixel
    on the right/bottom where it is one short of the skip connection. Inputs smaller than
    ``min_size`` (the bottleneck would have fewer than 2 pixels) raise `UnetInputError`.
    """

    def __init__(self, in_chans: int = 1, out_chans: int = 1, chans: int = 32, num_pool_layers: int = 4,
                 drop_prob: float = 0.0):
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.chans, self.num_pool_layers, self.drop_prob = chans, num_pool_layers, drop_prob

        self.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, chans, drop_prob)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(ch, 2 * ch, drop_prob))
            ch *= 2
        self.conv = ConvBlock(ch, 2 * ch, drop_prob)
        # Registration order matters for the state dict: up_conv before up_transpose_conv.
        self.up_conv = nn.ModuleList()
        self.up_transpose_conv = nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_transpose_conv.append(TransposeConvBlock(2 * ch, ch))
            self.up_conv.append(ConvBlock(2 * ch, ch, drop_prob))
            ch //= 2
        self.up_transpose_conv.append(TransposeConvBlock(2 * ch, ch))
        self.up_conv.append(nn.Sequential(ConvBlock(2 * ch, ch, drop_prob),
                                          nn.Conv2d(ch, out_chans, kernel_size=1, stride=1)))

    @classmethod
    def from_config(cls, config: UnetConfig) -> "Unet":
        return cls(config.in_chans, config.out_chans, config.chans, config.num_pool_layers, config.drop_prob)

    @property
    def min_size(self) -> int:
        """Smallest H (and W) processed: each side must survive ``num_pool_layers`` halvings."""
        return 2**self.num_pool_layers

    def check_input(self, image: torch.Tensor) -> None:
        """Raise `UnetInputError` if ``image`` cannot go through the network."""
        if image.dim() != 4 or image.shape[1] != self.in_chans:
            raise UnetInputError(f"Unet expects [N, {self.in_chans}, H, W], got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        bh, bw = h >> self.num_pool_layers, w >> self.num_pool_layers
        if bh < 1 or bw < 1 or bh * bw < 2:
            raise UnetInputError(
                f"Unet with {self.num_pool_layers} pooling layers cannot process {h}x{w}: the bottleneck "
                f"would be {bh}x{bw} and instance normalisation needs at least 2 pixels; use an image of at "
                f"least {self.min_size}x{2 * self.min_size} (or zero-pad it)")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.check_input(image)
        stack = []
        out = image
        for layer in self.down_sample_layers:
            out = layer(out)
            stack.append(out)
            out = F.avg_pool2d(out, kernel_size=2, stride=2, padding=0)
        out = self.conv(out)
        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = stack.pop()
            out = transpose_conv(out)
            pad_w = int(out.shape[-1] != skip.shape[-1])
            pad_h = int(out.shape[-2] != skip.shape[-2])
            if pad_w or pad_h:
                out = F.pad(out, [0, pad_w, 0, pad_h], "reflect")
            out = conv(torch.cat([out, skip], dim=1))
        return out


def normalize_unet_input(image: torch.Tensor, eps: float = 1e-11, clamp: float = 6.0
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastMRI ``UnetDataTransform`` normalisation of a magnitude image.

    image: real [..., H, W] -> (clamped (image - mean) / (std + eps), mean, std) with per-image
    scalars ``mean``/``std`` over the last two axes (shape [..., 1, 1]). Undo with ``out * std + mean``.
    """
    mean = image.mean(dim=(-2, -1), keepdim=True)
    std = image.std(dim=(-2, -1), keepdim=True)
    return ((image - mean) / (std + eps)).clamp(-clamp, clamp), mean, std
