"""The embedded default: a small fastMRI-format sample shipped with the package, and `recon demo`.

The sample is simulated by the project's own code from a held-out BrainWeb *test* subject (51):
T1-weighted complex slices (`recon.data.brainweb`), 8 birdcage coils and complex noise
(`recon.data.simulate.simulate_multicoil`), fully sampled, written with `recon.data.io.write_fastmri`.
Regenerate it with ``recon simulate demo-sample`` (needs ../shared/data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "brainweb_subject51_t1w.h5"
SAMPLE_SHAPE = (192, 160)


def make_demo_sample(path: Path = SAMPLE, n_slices: int = 3, n_coils: int = 8, seed: int = 51) -> Path:
    """Simulate the demo file (BrainWeb test subject 51, T1w, fully sampled, 8 coils) at `path`."""
    from recon.data.brainweb import brainweb_slices
    from recon.data.io import center_crop, write_fastmri
    from recon.data.simulate import simulate_multicoil

    rng = np.random.default_rng(seed)
    imgs = brainweb_slices(51, "T1w", rng, n_slices=n_slices + 2)[1:-1]          # skip the extreme slices
    x = center_crop(torch.from_numpy(imgs), SAMPLE_SHAPE)
    x = torch.nn.functional.pad(x, _pad_to(x.shape[-2:], SAMPLE_SHAPE))
    k, _, _ = simulate_multicoil(x, n_coils=n_coils, noise_std=0.002, add_phase=False, seed=seed)
    return write_fastmri(path, k, attrs={"acquisition": "AXT1_SIMULATED", "patient_id": "brainweb51-sim",
                                         "source": "BrainWeb subject 51 (test split), simulated by diffrecon"})


def _pad_to(shape, target) -> tuple[int, int, int, int]:
    dh, dw = max(target[0] - shape[0], 0), max(target[1] - shape[1], 0)
    return (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)
