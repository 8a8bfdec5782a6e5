"""From a fastMRI slice to a reconstruction problem: sampling, coil maps, operator, reference, crop."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from operators.espirit import sampled_pattern
from operators.fft import fft2c, ifft2c, rss
from operators.mri import MultiCoilMRI
from recon.problems.calibration import calibrate
from recon.data.io import FastMRIHeader, center_crop
from recon.data.masks import line_pattern_kind, make_mask
from recon.problems.noise import estimate_noise


@dataclass(frozen=True)
class MaskSpec:
    """Retrospective undersampling of fully sampled data (ignored when the data are undersampled).

    `span`: what the mask is built over on files padded in phase (`recon.data.masks.make_mask`): "fastmri",
    all phase lines then zeroed outside the acquired ones, as fastMRI's mask functions; or "acquired".
    """

    kind: str = "random"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    seed: int = 0
    span: str = "fastmri"


@dataclass
class MRIProblem:
    """One slice, ready for any method.

    Attributes:
        y: measured (masked) k-space, complex64 [C, H, W].
        mask: float32 [H, W] sampling mask (1D masks are expanded).
        maps: coil maps (`recon.problems.calibration.calibrate`: ESPIRiT or NLINV), complex64 [C, H, W] or [M, C, H, W].
        op: `MultiCoilMRI(maps, mask)`.
        crop: (rH, rW) fastMRI recon size for outputs and metrics.
        reference: magnitude [rH, rW] (the file's target or the RSS of fully sampled data), or None.
        acceleration: achieved acceleration of `mask` over the acquired lines.
        retrospective: True when the mask was applied here to fully sampled data.
        mask_kind: the mask kind, or "file" when the file's own sampling was used.
        calibration: how the maps were obtained (`recon.problems.calibration.Calibration.record`), or None.
        noise_std: k-space noise std per real/imaginary part, in the units of the k-space given (0 = noiseless).
        noise: the noise estimate's record (`recon.problems.noise.NoiseEstimate.to_json`), or None when given.
    """

    y: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    op: MultiCoilMRI
    crop: tuple[int, int]
    reference: torch.Tensor | None
    acceleration: float
    retrospective: bool
    mask_kind: str
    calibration: dict | None = None
    noise_std: float = 0.0
    noise: dict | None = None

    @property
    def sampling(self) -> str:
        """The kind of mask the data were sampled with: the requested kind for a retrospective mask, else what the
        file's own pattern looks like (`recon.data.masks.line_pattern_kind`: equispaced, random or 2d)."""
        return self.mask_kind if self.retrospective else line_pattern_kind(self.mask)

    @property
    def support(self) -> torch.Tensor:
        """Where the coil maps are non-zero, float [H, W] or [M, H, W]. Outside it the data say nothing
        (ESPIRiT's eigenvalue crop): images are defined on the support only."""
        return (self.maps.abs().sum(-3) > 0).float()

    def magnitude(self, images: torch.Tensor) -> torch.Tensor:
        """Magnitude on the maps' support, combined over map sets and cropped:
        complex [..., (M,) H, W] -> real [..., rH, rW]."""
        mag = images.abs() * self.support
        if self.op.n_sets > 1:
            mag = mag.pow(2).sum(-3).sqrt()
        return center_crop(mag, self.crop)

    def rss_estimate(self, images: torch.Tensor) -> torch.Tensor:
        """The fastMRI target predicted from image estimates: complex [..., (M,) H, W] -> real [..., rH, rW].

        A multi-coil file's target (`reconstruction_rss`) is the RSS of the fully sampled coil images,
        noise included, so it is not |x| but the noncentral chi mean of C coils' noise around |x|.
        ``sqrt(|x|^2 + b^2)`` with ``b = noise_floor(noise_std, C)`` is that mean exactly where there is no
        signal and within ``noise_std^2 / (4 |x|)`` of it at high SNR; it is |x| when the noise is 0.
        """
        return rss_from_magnitude(self.magnitude(images), self.noise_std, self.y.shape[-3])

    def zero_filled(self) -> torch.Tensor:
        """fastMRI's zero-filled baseline: RSS of the inverse FFT of the measured k-space, cropped."""
        return center_crop(rss(ifft2c(self.y)), self.crop)


def noise_floor(noise_std: float, n_coils: int) -> float:
    """Mean RSS of `n_coils` coil images of pure complex noise with std `noise_std` per real/imaginary part:
    the chi mean with 2C degrees of freedom, ``noise_std sqrt(2) Gamma(C + 1/2) / Gamma(C)``."""
    return noise_std * math.sqrt(2.0) * math.exp(math.lgamma(n_coils + 0.5) - math.lgamma(n_coils))


def rss_from_magnitude(magnitude, noise_std, n_coils: int):
    """``sqrt(magnitude^2 + noise_floor(noise_std, n_coils)^2)`` (`MRIProblem.rss_estimate` from |x|): torch or
    numpy `magnitude`, in the units of `noise_std` (a number, or an array that broadcasts, e.g. per slice)."""
    b = noise_std * noise_floor(1.0, n_coils)
    return (magnitude**2 + b * b) ** 0.5


def reduce_readout(kspace: torch.Tensor, n_readout: int) -> torch.Tensor:
    """Remove readout oversampling: centre-crop the image along the readout axis (-2), back to k-space.

    Exact for masks that sample whole readout lines (Cartesian 1D undersampling).
    """
    if kspace.shape[-2] <= n_readout:
        return kspace
    img = ifft2c(kspace)
    return fft2c(center_crop(img, (n_readout, img.shape[-1])))


def prepare_mri_slice(
    kspace: np.ndarray | torch.Tensor,
    header: FastMRIHeader,
    mask_spec: MaskSpec,
    target: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    n_maps: int | None = None,
    calib_width: int = 24,
    noise_std: float | None = None,
) -> MRIProblem:
    """Build the problem for one multi-coil slice [C, H, W].

    Fully sampled data (every acquired phase line present) are undersampled with `mask_spec`; data that
    are already undersampled keep their own sampling. Readout oversampling is removed first when whole
    readout lines are sampled.
    """
    k = torch.as_tensor(kspace).to(torch.complex64)
    # noise of the raw slice (None: estimated; before the readout crop, which keeps the per-sample std)
    noise = estimate_noise(k, readout_size=header.recon_size[0]) if noise_std is None else None
    left, right = header.acquired_lines
    pattern = sampled_pattern(k)
    lines = pattern.any(0)
    line_sampling = bool((pattern == lines[None, :]).all())  # every sampled column fully sampled along readout
    fully = line_sampling and bool(lines[left:right].all())
    if line_sampling:
        k = reduce_readout(k, header.recon_size[0])
    h, w = k.shape[-2:]
    reference = torch.as_tensor(target, dtype=torch.float32) if target is not None else None
    if fully:
        m = make_mask(mask_spec.kind, (h, w), mask_spec.acceleration, mask_spec.center_fraction,
                      seed=mask_spec.seed, acquired=(left, right), span=mask_spec.span)
        mask = m.mask.expand(h, w) if m.mask.dim() == 1 else m.mask
        accel, kind = m.acceleration, mask_spec.kind
        if reference is None:
            reference = center_crop(rss(ifft2c(k)), (header.recon_size[0], header.recon_size[1]))
    else:  # the file's own pattern, read before the readout crop (whose FFTs leave round-off in empty lines)
        mask = (lines[None, :].expand(h, w) if line_sampling else pattern).float()
        accel = float(mask[:, left:right].numel() / max(float(mask[:, left:right].sum()), 1.0))
        kind = "file"
    y = k * mask
    sigma = noise.std if noise else float(noise_std)
    cal = calibrate(y, mask, n_maps=n_maps, calib_width=calib_width, acquired_lines=right - left, noise_std=sigma)
    maps = cal.maps
    y, mask, maps = y.to(device), mask.to(device), maps.to(device)
    crop = (min(header.recon_size[0], h), min(header.recon_size[1], w))
    if reference is not None:
        reference = center_crop(reference, crop).to(device)
    return MRIProblem(y, mask, maps, MultiCoilMRI(maps, mask), crop, reference, accel, fully, kind,
                      calibration=cal.record(), noise_std=sigma,
                      noise=noise.to_json() if noise else None)
