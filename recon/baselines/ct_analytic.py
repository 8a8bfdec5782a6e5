"""Filtered back-projection (ASTRA), as a tensor function and as the registered CT baseline ``fbp``.

Units follow `operators.ct`: the sinogram holds line integrals in pixel units (``-ln(I / I0)`` when the
image is attenuation per pixel, see `recon.data.simulate.ct.hu_to_mu`), and FBP returns an image on that
same scale, so ``fbp(A x, A) ~ x`` (checked in tests/operators/test_ct.py).

Reference:
    Kak AC, Slaney M. *Principles of Computerized Tomographic Imaging*. IEEE Press, 1988.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from operators.ct import FanBeam2D, ParallelBeam2D, astra  # astra is None only where no CT operator can be built
from operators.weighted import WeightedOperator
from recon.baselines.registry import register
from solvers.posterior import Posterior

#: ASTRA filter names that need no extra parameter
FBP_FILTERS = (
    "ram-lak", "shepp-logan", "cosine", "hamming", "hann", "none", "lanczos", "triangular",
    "barlett-hann", "nuttall", "blackman-harris", "blackman-nuttall", "flat-top", "parzen",
)


def fbp(y: torch.Tensor, A: ParallelBeam2D | FanBeam2D | WeightedOperator, filter: str = "ram-lak") -> torch.Tensor:
    """Filtered back-projection through ASTRA: ``FBP`` on the CPU, ``FBP_CUDA`` on a CUDA device.

    Args:
        y: float ``[..., n_angles, n_detectors]`` line integrals (the sinogram).
        A: the geometry that produced it (its scaling is ASTRA's, so FBP inverts it); a
            `WeightedOperator` around one is unwrapped (with its whitened sinogram).
        filter: one of `FBP_FILTERS` (ASTRA's names), ``"ram-lak"`` by default.

    Returns:
        float ``[..., H, W]`` on the sinogram's device and dtype.

    Raises:
        ValueError: unknown filter, a sinogram not matching the geometry, or a fan-beam
            geometry on the CPU (ASTRA's CPU FBP supports parallel beam only).
    """
    if isinstance(A, WeightedOperator):  # FBP is unweighted: undo the whitening, use the geometry
        y, A = A.unwhiten(y), A.op
    if not isinstance(A, (ParallelBeam2D, FanBeam2D)):
        raise TypeError(f"fbp: operator must be ParallelBeam2D or FanBeam2D, got {type(A).__name__}")
    if filter not in FBP_FILTERS:
        raise ValueError(f"fbp: unknown filter {filter!r}; choose one of {FBP_FILTERS}")
    A.check_range(y, "sinogram")
    device = y.device
    on_gpu = device.type == "cuda"
    if isinstance(A, FanBeam2D) and not on_gpu:
        raise ValueError("fbp: ASTRA's CPU FBP supports parallel beam only; put the fan-beam sinogram on a CUDA "
                         "device (FBP_CUDA) or use sirt/cgls")
    lead, (h, w) = y.shape[:-2], A.image_shape
    # a private float32 host copy: ASTRA links it and must not touch the caller's tensor
    sino = y.detach().to(torch.float32).reshape(-1, *A.range_shape).cpu().contiguous().numpy().copy()
    out = np.zeros((sino.shape[0], h, w), dtype=np.float32)
    proj_geom, vol_geom = A.proj_geom(), A.vol_geom()
    with A.projector(device) as pid:
        for b in range(sino.shape[0]):
            sid = astra.data2d.link("-sino", proj_geom, sino[b])
            rid = astra.data2d.link("-vol", vol_geom, out[b])
            try:
                cfg = astra.astra_dict("FBP_CUDA" if on_gpu else "FBP")
                cfg["ProjectorId"], cfg["ProjectionDataId"], cfg["ReconstructionDataId"] = pid, sid, rid
                cfg["option"] = {"FilterType": filter}
                aid = astra.algorithm.create(cfg)
                try:
                    astra.algorithm.run(aid)
                finally:
                    astra.algorithm.delete(aid)
            finally:
                astra.data2d.delete([sid, rid])
    return torch.from_numpy(out).reshape(*lead, h, w).to(device=device, dtype=y.dtype)


@register("fbp", modality="ct")
def fbp_reconstruction(A: ParallelBeam2D | FanBeam2D | WeightedOperator, y: torch.Tensor,
                       filter: str = "ram-lak") -> Posterior:
    """`fbp` as a `Posterior`: real ``mean`` [..., H, W] from the sinogram ``y`` [..., n_angles, n_detectors]."""
    t0 = time.perf_counter()
    x = fbp(y, A, filter=filter)
    return Posterior(mean=x, std=None, wall_time=time.perf_counter() - t0, method="fbp", hparams={"filter": filter})
