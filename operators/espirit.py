"""ESPIRiT coil sensitivity maps (Uecker et al., MRM 2014) from the auto-calibration region.

One map set uses sigpy's `EspiritCalib` as it is. Several sets ("soft SENSE", BART ``ecalib -m M``)
need all the leading eigenvectors of the same per-pixel calibration operator, which sigpy's power
method does not give: `espirit_maps` then builds that operator exactly as `EspiritCalib` does
(calibration matrix -> SVD -> kernels -> image-space Gram matrix per pixel) and takes the top
``n_maps`` eigenvectors with `torch.linalg.eigh`.
"""
from __future__ import annotations

import numpy as np
import sigpy as sp
import sigpy.mri.app as mri_app
import torch


class CalibrationError(ValueError):
    """The k-space has no usable fully sampled centre."""


def _as_numpy(kspace) -> tuple[np.ndarray, torch.device]:
    if isinstance(kspace, torch.Tensor):
        return kspace.detach().cpu().numpy(), kspace.device
    return np.asarray(kspace), torch.device("cpu")


def acs_width(kspace: np.ndarray) -> int:
    """Side of the largest centred square of fully sampled k-space. kspace: [C, H, W]."""
    sampled = np.abs(kspace).sum(0) > 0
    h, w = sampled.shape
    ch, cw = h // 2, w // 2
    size = 0
    for s in range(2, min(h, w) + 1, 2):
        if not sampled[ch - s // 2: ch + s // 2, cw - s // 2: cw + s // 2].all():
            break
        size = s
    return size


def espirit_maps(
    kspace,
    calib_width: int = 24,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    n_maps: int = 1,
    max_iter: int = 100,
) -> torch.Tensor:
    """ESPIRiT sensitivity maps from (possibly undersampled) multi-coil k-space.

    Args:
        kspace: complex [C, H, W] (numpy or torch), centred; zero where not sampled. The fully
            sampled centre is found from the data (the largest centred square with every line
            present), so zero-padded phase edges and undersampled outer lines are ignored.
            Readout oversampling (e.g. fastMRI's 640 readout) needs no special handling: the
            maps have the shape of the k-space, and image-space crops apply to them as to images.
        calib_width: wanted calibration width; the found ACS width caps it.
        kernel_width: ESPIRiT kernel size.
        thresh: singular values below ``thresh * max`` are dropped (null space).
        crop: eigenvalue threshold; maps are zero where the eigenvalue is below it.
        n_maps: number of map sets (eigenvectors). 1 returns [C, H, W]; M > 1 returns [M, C, H, W].
        max_iter: power iterations (single set only).

    Returns:
        complex64 torch tensor on the input's device, phase-normalised to the first coil.
    """
    ksp, device = _as_numpy(kspace)
    if ksp.ndim != 3:
        raise CalibrationError(f"espirit_maps: expected k-space [C, H, W], got shape {ksp.shape}")
    if not np.isfinite(ksp).all():
        raise CalibrationError("espirit_maps: k-space contains NaN or Inf")
    found = acs_width(ksp)
    width = min(calib_width, found)
    if width < kernel_width + 2:
        raise CalibrationError(
            f"espirit_maps: fully sampled centre is only {found} lines wide; need at least {kernel_width + 2} "
            "(sample more centre lines, e.g. a larger centre fraction)"
        )
    ksp = ksp.astype(np.complex64)
    if n_maps == 1:
        mps = mri_app.EspiritCalib(ksp, calib_width=width, thresh=thresh, kernel_width=kernel_width,
                                   crop=crop, max_iter=max_iter, show_pbar=False).run()
        return torch.from_numpy(np.ascontiguousarray(mps)).to(torch.complex64).to(device)
    gram = _image_space_gram(ksp, width, kernel_width, thresh)          # [H, W, C, C]
    evals, evecs = torch.linalg.eigh(gram)                             # ascending
    evals = evals.flip(-1)[..., :n_maps]                               # [H, W, M]
    evecs = evecs.flip(-1)[..., :n_maps]                               # [H, W, C, M]
    mps = evecs.permute(3, 2, 0, 1)                                    # [M, C, H, W]
    ref = mps[:, :1]
    mps = mps * (ref.conj() / ref.abs().clamp_min(1e-12))
    mps = mps * (evals.permute(2, 0, 1) > crop).unsqueeze(1)
    return mps.to(torch.complex64).contiguous().to(device)


def _image_space_gram(ksp: np.ndarray, width: int, kernel_width: int, thresh: float) -> torch.Tensor:
    """Per-pixel ESPIRiT operator ``sum_k a_k(r) a_k(r)^H`` (as in sigpy's EspiritCalib). -> [H, W, C, C]."""
    n_coils = ksp.shape[0]
    calib = sp.resize(ksp, [n_coils, width, width])
    mat = sp.array_to_blocks(calib, [kernel_width] * 2, [1, 1])
    mat = mat.reshape([n_coils, -1, kernel_width**2]).transpose([1, 0, 2]).reshape([-1, n_coils * kernel_width**2])
    _, s, vh = np.linalg.svd(mat, full_matrices=False)
    vh = vh[s > thresh * s.max()]
    kernels = vh.reshape([len(vh), n_coils, kernel_width, kernel_width])
    img_kernels = sp.ifft(sp.resize(kernels, (len(vh), *ksp.shape)), axes=(-2, -1))  # [K, C, H, W]
    a = torch.from_numpy(np.ascontiguousarray(img_kernels)).to(torch.complex128).permute(2, 3, 1, 0)  # [H, W, C, K]
    gram = a @ a.conj().transpose(-1, -2)
    return gram * (ksp.shape[1] * ksp.shape[2] / kernel_width**2)
