"""Complex brain MR slices simulated from BrainWeb anatomical models, and Colin27 slices.

BrainWeb (Aubert-Broche et al. 2006) ships crisp tissue labels at 0.5 mm. We turn a label
volume into complex images as follows (parameters from ``../shared/data/README.md``):

1. partial volume: one-hot labels averaged over 2x2x2 blocks (0.5 mm -> 1 mm); at another in-plane pixel size
   (`pixel_mm`, e.g. 0.7 as fastMRI's 320 x 320 brain images) averaged over the slice's two 0.5 mm planes and
   resampled linearly in plane;
2. spin-echo signal per tissue ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)`` for T1w/T2w/PDw,
   with small random jitter of the tissue parameters and of (TR, TE);
3. a small smooth per-tissue texture (so regions are not flat), mixed by the tissue fractions;
4. a smooth multiplicative bias field;
5. a random smooth phase (constant + linear + quadratic) -> complex64;
6. scaled so that the 99th percentile of the magnitude is 1 (the priors' ``"p99"`` convention).

Slices are axial, ``[H, W] = [217, 181]`` at 1 mm (about ``0.5 [434, 362] / pixel_mm`` otherwise), anterior at
the top.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# Subject splits (keep them: numbers across the project stay comparable).
BRAINWEB_TRAIN: tuple[int, ...] = (4, 5, 6, 18, 20, 38, 41, 42, 43, 44, 45, 46, 47, 48)
BRAINWEB_VAL: tuple[int, ...] = (49, 50)
BRAINWEB_TEST: tuple[int, ...] = (51, 52, 53, 54)

CONTRASTS: dict[str, tuple[float, float]] = {  # (TR, TE) in ms, spin echo
    "T1w": (500.0, 10.0),
    "T2w": (4000.0, 100.0),
    "PDw": (2300.0, 22.0),
}

# label: (T1 ms, T2 ms, PD) at 1.5 T; zero T1 means no signal.
TISSUES: dict[int, tuple[float, float, float]] = {
    0: (0.0, 0.0, 0.0),        # background
    1: (2569.0, 329.0, 1.00),  # CSF
    2: (833.0, 83.0, 0.86),    # grey matter
    3: (500.0, 70.0, 0.77),    # white matter
    4: (350.0, 70.0, 1.00),    # fat
    5: (900.0, 47.0, 1.00),    # muscle
    6: (2569.0, 329.0, 1.00),  # muscle/skin
    7: (0.0, 0.0, 0.0),        # skull
    8: (0.0, 0.0, 0.0),        # vessels
    9: (500.0, 70.0, 0.77),    # around fat
    10: (2569.0, 329.0, 1.00),  # dura
    11: (500.0, 70.0, 0.77),   # bone marrow
}
N_LABELS = 12


class DataNotFoundError(FileNotFoundError):
    """A data file the caller asked for is not where it should be."""


def brainweb_path(subject: int, root: Path | str = SHARED_DATA) -> Path:
    """Path of ``subjectNN_crisp_v.mnc.gz`` under ``root/brainweb``."""
    p = Path(root) / "brainweb" / f"subject{subject:02d}_crisp_v.mnc.gz"
    if not p.exists():
        raise DataNotFoundError(f"BrainWeb subject {subject:02d} not found at {p}")
    return p


def load_brainweb_labels(subject: int, root: Path | str = SHARED_DATA) -> np.ndarray:
    """Crisp labels of one subject: uint8 ``[z, y, x] = [362, 434, 362]`` at 0.5 mm (values 0..11)."""
    import nibabel as nib

    vol = np.asarray(nib.load(str(brainweb_path(subject, root))).dataobj)
    return np.rint(vol).astype(np.uint8)


def tissue_fractions(labels: np.ndarray, z: int, pixel_mm: float = 1.0) -> np.ndarray:
    """Partial-volume fractions of 1 mm axial slice ``z``: float32 ``[12, H, W]`` (sums to 1).

    Averages the one-hot labels of 0.5 mm voxels over 2x2x2 blocks; rows are flipped so that
    anterior is at the top. With another ``pixel_mm`` the slice (still 1 mm thick) is resampled in plane to
    that pixel size instead (`_resampled_fractions`).
    """
    block = labels[2 * z: 2 * z + 2]
    if pixel_mm != 1.0:
        return _resampled_fractions(block, pixel_mm)
    _, ny, nx = block.shape
    block = block[:, : ny // 2 * 2, : nx // 2 * 2]
    frac = _onehot(block).reshape(N_LABELS, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5))
    return np.ascontiguousarray(frac[:, ::-1, :])


def _onehot(block: np.ndarray) -> np.ndarray:
    """Labels ``[Z, Y, X]`` -> float32 one-hot ``[12, Z, Y, X]``."""
    return (block[None] == np.arange(N_LABELS, dtype=np.uint8)[:, None, None, None]).astype(np.float32)


def _resampled_fractions(block: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Fractions of two 0.5 mm label planes ``[2, Y, X]`` at ``pixel_mm`` in plane: the one-hot labels averaged over
    the two planes, resampled linearly by ``0.5 / pixel_mm``, clipped at 0 and renormalised to sum to 1, rows
    flipped: float32 ``[12, H, W]``."""
    if not 0.5 <= pixel_mm <= 4.0:
        raise ValueError(f"pixel_mm must be in [0.5, 4] (BrainWeb's labels are 0.5 mm), got {pixel_mm}")
    planes = _onehot(block).mean(1)
    frac = np.clip(np.stack([zoom(f, 0.5 / pixel_mm, order=1, grid_mode=True, mode="grid-constant") for f in planes]),
                   0.0, None)
    frac /= np.maximum(frac.sum(0, keepdims=True), 1e-6)
    return np.ascontiguousarray(frac[:, ::-1, :])


def brain_slice_indices(labels: np.ndarray, n_slices: int, min_area_fraction: float = 0.35) -> np.ndarray:
    """``n_slices`` evenly spaced 1 mm axial indices whose brain area (CSF+GM+WM) is at least
    ``min_area_fraction`` of the largest one (int64 ``[n_slices]``, deterministic)."""
    brain = np.isin(labels, (1, 2, 3))
    area = brain.reshape(labels.shape[0] // 2, 2, -1).sum(axis=(1, 2))
    ok = np.flatnonzero(area >= min_area_fraction * area.max())
    pos = np.linspace(0, len(ok) - 1, n_slices)
    return ok[np.rint(pos).astype(np.int64)]


def _grid(shape: tuple[int, int], extent: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, scaled so the larger side (or ``extent`` pixels) spans [-1, 1]."""
    h, w = shape
    e = float(extent or max(h, w))
    y = (np.arange(h) - (h - 1) / 2) / (e / 2)
    x = (np.arange(w) - (w - 1) / 2) / (e / 2)
    return np.meshgrid(y, x, indexing="ij")


def random_smooth_phase(
    shape: tuple[int, int], rng: np.random.Generator, linear: float = 1.5, quadratic: float = 0.75,
    extent: float | None = None,
) -> np.ndarray:
    """A random smooth phase map (radians), float32 ``[H, W]``.

    ``phi = c0 + c1 y + c2 x + c3 y^2 + c4 x^2 + c5 xy`` with ``c0 ~ U(-pi, pi)``, linear
    coefficients ~ N(0, linear^2), quadratic ~ N(0, quadratic^2); coordinates span [-1, 1]
    over ``extent`` pixels (default: the larger side), so patches can carry the phase slope
    of a whole image.
    """
    yy, xx = _grid(shape, extent)
    c = rng.normal(size=5)
    phi = (rng.uniform(-np.pi, np.pi) + linear * (c[0] * yy + c[1] * xx)
           + quadratic * (c[2] * yy**2 + c[3] * xx**2 + c[4] * xx * yy))
    return phi.astype(np.float32)


def random_bias_field(shape: tuple[int, int], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative bias field ``exp(low-order polynomial)``, float32 ``[H, W]``, mean ~1."""
    yy, xx = _grid(shape)
    c = rng.normal(scale=strength, size=5)
    return np.exp(c[0] * yy + c[1] * xx + c[2] * yy**2 + c[3] * xx**2 + c[4] * xx * yy).astype(np.float32)


def tissue_signals(contrast: str, rng: np.random.Generator | None = None, jitter: float = 0.05) -> np.ndarray:
    """Spin-echo signal of each label for a contrast, float32 ``[12]``.

    With ``rng``, T1, T2, PD and (TR, TE) are jittered by a relative N(0, jitter^2) each.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast '{contrast}'; choose one of {sorted(CONTRASTS)}")
    tr, te = CONTRASTS[contrast]
    if rng is not None:
        tr, te = tr * (1 + jitter * rng.normal()), te * (1 + jitter * rng.normal())
    out = np.zeros(N_LABELS, dtype=np.float32)
    for label, (t1, t2, pd) in TISSUES.items():
        if t1 <= 0:
            continue
        if rng is not None:
            t1, t2, pd = (v * (1 + jitter * rng.normal()) for v in (t1, t2, pd))
        out[label] = pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return out


def simulate_slice(
    fractions: np.ndarray, contrast: str, rng: np.random.Generator,
    texture: float = 0.04, bias: float = 0.15, phase: bool = True,
) -> np.ndarray:
    """One complex slice from tissue fractions ``[12, H, W]`` -> complex64 ``[H, W]`` (not normalised)."""
    sig = tissue_signals(contrast, rng)
    shape = fractions.shape[1:]
    img = np.zeros(shape, dtype=np.float32)
    for label in np.flatnonzero(sig):
        tex = gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=1.5)
        tex *= texture / max(float(tex.std()), 1e-8)
        img += fractions[label] * sig[label] * (1 + tex)
    img *= random_bias_field(shape, rng, bias)
    if not phase:
        return img.astype(np.complex64)
    return (img * np.exp(1j * random_smooth_phase(shape, rng))).astype(np.complex64)


def normalize_p99(images: np.ndarray) -> np.ndarray:
    """Scale each image of ``[S, H, W]`` so the 99th percentile of its magnitude is 1."""
    mag = np.abs(images).reshape(images.shape[0], -1)
    p = np.maximum(np.percentile(mag, 99, axis=1), 1e-12)
    return (images / p[:, None, None]).astype(images.dtype)


def brainweb_slices(
    subject: int, contrast: str, rng: np.random.Generator, n_slices: int = 16,
    root: Path | str = SHARED_DATA, labels: np.ndarray | None = None, normalize: bool = True,
    pixel_mm: float = 1.0,
) -> np.ndarray:
    """Simulated complex axial slices of one BrainWeb subject: complex64 ``[n_slices, 217, 181]`` (at
    ``pixel_mm`` 1; `tissue_fractions` for other pixel sizes).

    Slices are evenly spaced through the brain (deterministic); contrast jitter, texture,
    bias field and phase are drawn from ``rng``. With ``normalize`` each slice has
    p99(|x|) = 1. Pass ``labels`` (from `load_brainweb_labels`) to avoid reloading the volume.
    """
    if labels is None:
        labels = load_brainweb_labels(subject, root)
    idx = brain_slice_indices(labels, n_slices)
    out = np.stack([simulate_slice(tissue_fractions(labels, int(z), pixel_mm), contrast, rng) for z in idx])
    return normalize_p99(out) if normalize else out


# ---------------------------------------------------------------------------
# Colin27 (real T1-weighted magnitude, one subject, train only)
# ---------------------------------------------------------------------------
COLIN27_ORIENTATIONS = ("axial", "coronal", "sagittal")


def colin27_slices(
    orientation: str, n_slices: int = 24, root: Path | str = SHARED_DATA, file: str = "ch2.nii.gz",
    min_area_fraction: float = 0.5,
) -> np.ndarray:
    """Evenly spaced Colin27 slices (1 mm), float32 ``[n_slices, H, W]``, p99-normalised magnitude.

    ``orientation``: axial ``[217, 181]``, coronal ``[181, 181]``, sagittal ``[181, 217]``;
    superior/anterior at the top. Only slices whose head area is at least
    ``min_area_fraction`` of the largest are used.
    """
    import nibabel as nib

    if orientation not in COLIN27_ORIENTATIONS:
        raise ValueError(f"unknown orientation '{orientation}'; choose one of {COLIN27_ORIENTATIONS}")
    p = Path(root) / "colin27" / file
    if not p.exists():
        raise DataNotFoundError(f"Colin27 not found at {p}")
    vol = np.asarray(nib.load(str(p)).dataobj).astype(np.float32)  # [x, y, z] RAS
    if orientation == "axial":
        stack = vol.transpose(2, 1, 0)[:, ::-1, :]      # [z][y, x], anterior up
    elif orientation == "coronal":
        stack = vol.transpose(1, 2, 0)[:, ::-1, :]      # [y][z, x], superior up
    else:
        stack = vol.transpose(0, 2, 1)[:, ::-1, ::-1]   # [x][z, y], superior up, anterior left
    head = stack > 0.1 * np.percentile(vol, 99)
    area = head.reshape(stack.shape[0], -1).sum(1)
    ok = np.flatnonzero(area >= min_area_fraction * area.max())
    idx = ok[np.rint(np.linspace(0, len(ok) - 1, n_slices)).astype(np.int64)]
    return normalize_p99(np.ascontiguousarray(stack[idx]))
