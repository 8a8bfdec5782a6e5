"""Head-CT slices (``../shared/data/ct/head_ct.h5``) and the CT prior's intensity scale.

The prior works on linear attenuation relative to water:

    x = max((HU + 1000) / 1000, 0)      so air = 0, water = 1, dense bone ~ 2.5-3.

`hu_to_prior` / `prior_to_hu` are the only place that mapping is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.data.brainweb import SHARED_DATA, DataNotFoundError

CT_TRAIN: tuple[int, ...] = tuple(range(0, 72))
CT_VAL: tuple[int, ...] = tuple(range(72, 84))
CT_TEST: tuple[int, ...] = tuple(range(84, 108))
CT_SPLITS: dict[str, tuple[int, ...]] = {"train": CT_TRAIN, "val": CT_VAL, "test": CT_TEST}

HU_WATER = 0.0
HU_AIR = -1000.0


def hu_to_prior(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units -> prior scale ``max((HU + 1000) / 1000, 0)`` (float32, same shape)."""
    return np.maximum((np.asarray(hu, dtype=np.float32) - HU_AIR) / (HU_WATER - HU_AIR), 0.0).astype(np.float32)


def prior_to_hu(x: np.ndarray) -> np.ndarray:
    """Prior scale -> Hounsfield units ``1000 x - 1000`` (float32; inverse of `hu_to_prior` above air)."""
    return (np.asarray(x, dtype=np.float32) * (HU_WATER - HU_AIR) + HU_AIR).astype(np.float32)


def ct_path(root: Path | str = SHARED_DATA) -> Path:
    p = Path(root) / "ct" / "head_ct.h5"
    if not p.exists():
        raise DataNotFoundError(f"head CT volume not found at {p}")
    return p


def ct_slices(split: str = "train", root: Path | str = SHARED_DATA, hu: bool = False) -> np.ndarray:
    """Axial head-CT slices of a split, float32 ``[S, 256, 256]``.

    ``split``: ``"train"`` (0..71), ``"val"`` (72..83) or ``"test"`` (84..107).
    Returned in the prior scale (`hu_to_prior`), or in HU with ``hu=True``.
    """
    import h5py

    if split not in CT_SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {sorted(CT_SPLITS)}")
    idx = list(CT_SPLITS[split])
    with h5py.File(ct_path(root), "r") as f:
        vol = f["volume"][idx[0]: idx[-1] + 1].astype(np.float32)
    return vol if hu else hu_to_prior(vol)
