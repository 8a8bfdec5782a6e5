"""ESPIRiT coil sensitivity maps (Uecker et al., MRM 2014) from the auto-calibration (ACS) region.

The calibration follows the paper and BART ``ecalib``: a Hankel-structured calibration matrix of
``k x k`` kernels slid over the fully sampled centre -> SVD -> the row space (singular values above
``thresh * max``, and above the noise's Marchenko-Pastur edge when the noise std is given) -> the per-pixel
image-space operator ``G(r) = sum_k a_k(r) a_k(r)^H`` -> its leading eigenvectors are the maps, zeroed where
their eigenvalue is below ``crop``. The calibration region is a rectangle: every fully sampled readout row of
the ACS block is used (a 1D Cartesian mask samples the whole readout), so a narrow ACS block still gives many
kernel positions.

The ACS block is found from the data (`acs_region`): the largest block of fastMRI's form, symmetric
about the k-space centre, in which every sample is present. A line that an equispaced or random mask
happens to put next to the block on one side is therefore not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .fft import ifft2c


NOISE_EDGE_SLACK = 1.2   # margin over the pure-noise edge (its largest singular value fluctuates ~1%)


class CalibrationError(ValueError):
    """The k-space has no usable fully sampled centre."""


class NoSignalError(CalibrationError):
    """The calibration region holds nothing above the noise (a slice outside the object, or a dead receiver):
    no number of centre lines would give coil maps."""


def _as_numpy(kspace) -> tuple[np.ndarray, torch.device]:
    if isinstance(kspace, torch.Tensor):
        return kspace.detach().cpu().numpy(), kspace.device
    return np.asarray(kspace), torch.device("cpu")


def _centred_run(line: np.ndarray) -> int:
    """Length L of the largest block ``[p, p + L)``, ``p = (n - L + 1) // 2``, with every entry True.

    This is where fastMRI's mask functions put ``L`` centre lines of ``n``; the block always holds the
    k-space centre ``n // 2``."""
    n = line.shape[0]
    c = n // 2
    if not line[c]:
        return 0
    a = c
    while a > 0 and line[a - 1]:
        a -= 1
    b = c + 1
    while b < n and line[b]:
        b += 1
    for length in range(b - a, 0, -1):
        start = (n - length + 1) // 2
        if a <= start and start + length <= b:
            return length
    return 0


def sampled_pattern(kspace: torch.Tensor) -> torch.Tensor:
    """Where any coil has data: k-space complex [C, H, W] -> bool [H, W]."""
    return kspace.abs().sum(0) > 0


def acs_region(sampled: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """Size ``(rows, lines)`` of the fully sampled centre block of a sampling pattern bool [H, W].

    Each side is the largest centred run (`_centred_run`) through the k-space centre; when the
    rectangle they span has gaps (2D masks) the longer relative side shrinks until it has none.
    Returns (0, 0) when the k-space centre itself is not sampled.
    """
    s = np.asarray(sampled.cpu() if isinstance(sampled, torch.Tensor) else sampled).astype(bool)
    h, w = s.shape
    rh, rw = _centred_run(s[:, w // 2]), _centred_run(s[h // 2, :])
    while rh > 0 and rw > 0:
        top, left = (h - rh + 1) // 2, (w - rw + 1) // 2
        block = s[top: top + rh, left: left + rw]
        if block.all():
            return rh, rw
        if rh / h >= rw / w:
            rh -= 1
        else:
            rw -= 1
    return 0, 0


def acs_width(kspace: np.ndarray | torch.Tensor) -> int:
    """Number of fully sampled centre phase-encode lines (the last axis) of k-space [C, H, W]."""
    ksp, _ = _as_numpy(kspace)
    return acs_region(np.abs(ksp).sum(0) > 0)[1]


@dataclass
class EspiritResult:
    """ESPIRiT maps with what they were computed from.

    Attributes:
        maps: complex64 [M, C, H, W] leading eigenvectors, zero where the eigenvalue is below ``crop``.
        eigvals: float32 [M, H, W] their eigenvalues (about 1 where the data are consistent with the maps).
        acs: (rows, lines) of the fully sampled centre found in the data.
        calib: (rows, lines) of the calibration region used.
        kernel: kernel width used.
    """

    maps: torch.Tensor
    eigvals: torch.Tensor
    acs: tuple[int, int]
    calib: tuple[int, int]
    kernel: int


def kernel_for(acs_lines: int, kernel_width: int = 6) -> int:
    """Kernel width for an ACS block ``acs_lines`` wide: the wanted width while at least twice it fits,
    else ``acs_lines // 2`` (at least 3), so the kernel slides over several positions along the phase axis."""
    return max(3, min(kernel_width, acs_lines // 2))


def espirit(
    kspace,
    calib_width: int = 24,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    n_maps: int = 2,
    calib_rows: int | None = None,
    noise_std: float = 0.0,
) -> EspiritResult:
    """ESPIRiT on (possibly undersampled) multi-coil k-space.

    Args:
        kspace: complex [C, H, W] (numpy or torch), centred, zero where not sampled; H is the readout.
        calib_width: wanted calibration width along the phase axis; the found ACS width caps it.
        kernel_width: wanted kernel width; `kernel_for` shrinks it for a narrow ACS block.
        thresh: singular values below ``thresh * max`` are dropped (null space).
        noise_std: k-space noise std per real/imaginary part (0 = unknown); singular values below
            `NOISE_EDGE_SLACK` times the largest singular value of a pure-noise calibration matrix,
            ``sqrt(2) noise_std (sqrt(rows) + sqrt(cols))`` (Marchenko-Pastur edge), are dropped too:
            on noisy data a relative threshold alone keeps noise directions, and the eigenvalue maps
            become 1 everywhere (meaningless maps, a spurious second set).
        crop: eigenvalue threshold; maps are zero where their eigenvalue is below it.
        n_maps: number of eigenvectors kept.
        calib_rows: readout rows of the calibration region; None = all fully sampled rows of the ACS block.

    Raises:
        CalibrationError: non-finite data, wrong shape, or an ACS block narrower than 6 lines.
        NoSignalError: no singular value of the calibration matrix above the noise edge (with ``noise_std``).
    """
    ksp, device = _as_numpy(kspace)
    if ksp.ndim != 3:
        raise CalibrationError(f"espirit: expected k-space [C, H, W], got shape {ksp.shape}")
    if not np.isfinite(ksp).all():
        raise CalibrationError("espirit: k-space contains NaN or Inf")
    acs = acs_region(np.abs(ksp).sum(0) > 0)
    kernel = kernel_for(acs[1], kernel_width)
    if min(acs) < kernel + 3:
        raise CalibrationError(
            f"espirit: the fully sampled centre is {acs[0]} x {acs[1]} (readout x phase); ESPIRiT needs at "
            f"least {kernel + 3} x {kernel + 3} (sample more centre lines, e.g. a larger centre fraction)")
    calib = (min(acs[0], calib_rows) if calib_rows else acs[0], min(acs[1], calib_width))
    gram = image_space_gram(ksp.astype(np.complex64), calib, kernel, thresh, noise_std)   # [H, W, C, C]
    evals, evecs = torch.linalg.eigh(gram)                                      # ascending
    evals = evals.flip(-1)[..., :n_maps].permute(2, 0, 1)                       # [M, H, W]
    mps = evecs.flip(-1)[..., :n_maps].permute(3, 2, 0, 1)                      # [M, C, H, W]
    ref = mps[:, :1]
    mps = mps * (ref.conj() / ref.abs().clamp_min(1e-12))
    mps = mps * (evals > crop).unsqueeze(1)
    return EspiritResult(mps.to(torch.complex64).contiguous().to(device), evals.float().to(device),
                         acs, calib, kernel)


def espirit_maps(kspace, calib_width: int = 24, kernel_width: int = 6, thresh: float = 0.02, crop: float = 0.95,
                 n_maps: int = 1, max_iter: int = 100) -> torch.Tensor:
    """ESPIRiT sensitivity maps from (possibly undersampled) multi-coil k-space (see `espirit`).

    Args:
        kspace: complex [C, H, W] (numpy or torch), centred; zero where not sampled.
        calib_width, kernel_width, thresh, crop: as `espirit`.
        n_maps: number of map sets. 1 returns [C, H, W]; M > 1 returns [M, C, H, W].
        max_iter: unused (kept for callers of the power-method version); eigenvectors are exact.

    Returns:
        complex64 torch tensor on the input's device, phase-normalised to the first coil.
    """
    del max_iter
    res = espirit(kspace, calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop,
                  n_maps=n_maps)
    return res.maps[0] if n_maps == 1 else res.maps


def calibration_matrix(calib: np.ndarray, kernel: int) -> np.ndarray:
    """Calibration (block-Hankel) matrix: every k x k patch of calib [C, h, w] -> [patches, C * k * k]."""
    c, h, w = calib.shape
    win = np.lib.stride_tricks.sliding_window_view(calib, (kernel, kernel), axis=(1, 2))  # [C, h', w', k, k]
    return win.transpose(1, 2, 0, 3, 4).reshape((h - kernel + 1) * (w - kernel + 1), c * kernel * kernel)


def centre_block(ksp: np.ndarray, calib: tuple[int, int]) -> np.ndarray:
    """The centred ``calib`` = (rows, lines) block of k-space [C, H, W]."""
    h, w = ksp.shape[-2:]
    top, left = (h - calib[0] + 1) // 2, (w - calib[1] + 1) // 2
    return ksp[:, top: top + calib[0], left: left + calib[1]]


def pure_noise_edge(shape: tuple[int, int], noise_std: float) -> float:
    """Largest singular value of a [rows, cols] matrix of complex noise with ``noise_std`` per real/imaginary part
    (Marchenko-Pastur edge): ``sqrt(2) noise_std (sqrt(rows) + sqrt(cols))``."""
    return math.sqrt(2.0) * noise_std * (math.sqrt(shape[0]) + math.sqrt(shape[1]))


def require_signal(largest: float, noise_edge: float) -> None:
    """Raise `NoSignalError` unless a calibration matrix's largest singular value is above `NOISE_EDGE_SLACK` times
    ``noise_edge`` (`pure_noise_edge`; 0 when the noise is unknown, which passes any data that are not all zero)."""
    if not largest > NOISE_EDGE_SLACK * noise_edge:
        ratio = f"{largest / noise_edge:.2f} times a pure-noise matrix's" if noise_edge > 0 else "zero"
        raise NoSignalError(
            f"the calibration region holds no signal above the noise (its largest singular value is {ratio}): "
            "the slice looks empty (outside the object?), and no calibration can find coil maps in it")


def measured_signal(ksp: np.ndarray, calib: tuple[int, int], kernel: int, noise_std: float) -> None:
    """`require_signal` on the calibration matrix of the measured centre ``calib`` of k-space [C, H, W]."""
    a = calibration_matrix(centre_block(ksp, calib), kernel)
    require_signal(float(np.linalg.norm(a, 2)), pure_noise_edge(a.shape, noise_std))


def image_space_gram(ksp: np.ndarray, calib: tuple[int, int], kernel: int, thresh: float,
                     noise_std: float = 0.0, chunk: int = 16) -> torch.Tensor:
    """Per-pixel ESPIRiT operator ``G(r) = sum_k a_k(r) a_k(r)^H`` -> complex128 [H, W, C, C].

    ksp: complex64 [C, H, W]; the calibration region is its centred ``calib`` block. ``a_k`` is the
    centred inverse FFT of kernel ``k`` zero-padded to [H, W]; the scale makes eigenvalues about 1
    (as sigpy's EspiritCalib). Kernels are transformed ``chunk`` at a time to bound memory.
    """
    n_coils, h, w = ksp.shape
    a = calibration_matrix(centre_block(ksp, calib), kernel)
    _, s, vh = np.linalg.svd(a, full_matrices=False)
    edge = pure_noise_edge(a.shape, noise_std)
    require_signal(float(s.max()), edge)
    vh = vh[s > max(thresh * s.max(), NOISE_EDGE_SLACK * edge)]
    kernels = torch.from_numpy(np.ascontiguousarray(vh.reshape(len(vh), n_coils, kernel, kernel)))
    gram = torch.zeros(h, w, n_coils, n_coils, dtype=torch.complex128)
    top, left = h // 2 - kernel // 2, w // 2 - kernel // 2
    for i in range(0, len(kernels), chunk):
        part = kernels[i: i + chunk]
        padded = torch.zeros(len(part), n_coils, h, w, dtype=torch.complex64)
        padded[..., top: top + kernel, left: left + kernel] = part
        a = ifft2c(padded).permute(2, 3, 1, 0).to(torch.complex128)        # [H, W, C, k]
        gram += a @ a.conj().transpose(-1, -2)
    return gram * (h * w / kernel**2)
