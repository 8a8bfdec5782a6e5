"""Classical CT reconstructions: filtered back-projection (ASTRA), SIRT and CGLS.

All take and return torch tensors; leading dimensions are independent slices.
Units follow `operators.ct`: the sinogram holds line integrals in pixel units
(``-ln(I / I0)`` when the image is attenuation per pixel, see
`recon.data.simulate.ct.hu_to_mu`), and every method returns an image on that same
scale, so ``fbp(A x, A) ~ x`` (checked in tests/test_ct.py).

References:
    Kak AC, Slaney M. *Principles of Computerized Tomographic Imaging*. IEEE Press, 1988 (FBP).
    Gregor J, Benson T. "Computational analysis and improvement of SIRT." IEEE TMI 2008;27:918-924.
    Hestenes MR, Stiefel E. "Methods of conjugate gradients for solving linear systems." 1952 (CGLS).
"""
from __future__ import annotations

import astra
import numpy as np
import torch

from operators.base import LinearOperator, inner
from operators.ct import FanBeam2D, ParallelBeam2D
from operators.weighted import WeightedOperator

#: ASTRA filter names that need no extra parameter
FBP_FILTERS = (
    "ram-lak", "shepp-logan", "cosine", "hamming", "hann", "none", "lanczos", "triangular",
    "barlett-hann", "nuttall", "blackman-harris", "blackman-nuttall", "flat-top", "parzen",
)


def fbp(sinogram: torch.Tensor, operator: ParallelBeam2D | FanBeam2D, filter: str = "ram-lak") -> torch.Tensor:
    """Filtered back-projection through ASTRA: ``FBP`` on the CPU, ``FBP_CUDA`` on a CUDA device.

    Args:
        sinogram: float ``[..., n_angles, n_detectors]`` line integrals.
        operator: the geometry that produced it (its scaling is ASTRA's, so FBP inverts it); a
            `WeightedOperator` around one is unwrapped (with its whitened sinogram).
        filter: one of `FBP_FILTERS` (ASTRA's names), ``"ram-lak"`` by default.

    Returns:
        float ``[..., H, W]`` on the sinogram's device and dtype.

    Raises:
        ValueError: unknown filter, a sinogram not matching the geometry, or a fan-beam
            geometry on the CPU (ASTRA's CPU FBP supports parallel beam only).
    """
    if isinstance(operator, WeightedOperator):  # FBP is unweighted: undo the whitening, use the geometry
        sinogram, operator = operator.unwhiten(sinogram), operator.op
    if not isinstance(operator, (ParallelBeam2D, FanBeam2D)):
        raise TypeError(f"fbp: operator must be ParallelBeam2D or FanBeam2D, got {type(operator).__name__}")
    if filter not in FBP_FILTERS:
        raise ValueError(f"fbp: unknown filter {filter!r}; choose one of {FBP_FILTERS}")
    operator.check_range(sinogram, "sinogram")
    device = sinogram.device
    on_gpu = device.type == "cuda"
    if isinstance(operator, FanBeam2D) and not on_gpu:
        raise ValueError("fbp: ASTRA's CPU FBP supports parallel beam only; put the fan-beam sinogram on a CUDA "
                         "device (FBP_CUDA) or use sirt/cgls")
    lead, (h, w) = sinogram.shape[:-2], operator.image_shape
    # a private float32 host copy: ASTRA links it and must not touch the caller's tensor
    sino = sinogram.detach().to(torch.float32).reshape(-1, *operator.range_shape).cpu().contiguous().numpy().copy()
    out = np.zeros((sino.shape[0], h, w), dtype=np.float32)
    proj_geom, vol_geom = operator.proj_geom(), operator.vol_geom()
    with operator.projector(device) as pid:
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
    return torch.from_numpy(out).reshape(*lead, h, w).to(device=device, dtype=sinogram.dtype)


def _start(sinogram: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None) -> torch.Tensor:
    operator.check_range(sinogram, "sinogram")
    lead = sinogram.shape[: sinogram.dim() - len(operator.range_shape)]
    if x0 is None:
        return torch.zeros(*lead, *operator.domain_shape, device=sinogram.device, dtype=sinogram.dtype)
    operator.check_domain(x0, "x0")
    return x0.detach().clone()


def sirt(sinogram: torch.Tensor, operator: LinearOperator, n_iter: int = 50, x0: torch.Tensor | None = None,
         nonneg: bool = False) -> torch.Tensor:
    """SIRT: ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)`` (zero where the sums vanish).

    Args:
        sinogram: float ``[..., *range_shape]``.
        operator: any real CT operator (`ParallelBeam2D`, `FanBeam2D`, `ConeBeam3D`).
        n_iter: iterations (two projections each).
        x0: start ``[..., *domain_shape]``; zeros when None.
        nonneg: clip the iterate at 0 after each step (attenuation is non-negative).

    Returns:
        float ``[..., *domain_shape]``. The weighted residual ``||y - A x||_R`` does not increase.
    """
    with torch.no_grad():
        x = _start(sinogram, operator, x0)
        dev, dt = sinogram.device, sinogram.dtype
        row = operator.forward(torch.ones(operator.domain_shape, device=dev, dtype=dt))
        col = operator.adjoint(torch.ones(operator.range_shape, device=dev, dtype=dt))
        r_w = torch.where(row > 1e-6 * row.max(), 1.0 / row.clamp_min(1e-30), torch.zeros_like(row))
        c_w = torch.where(col > 1e-6 * col.max(), 1.0 / col.clamp_min(1e-30), torch.zeros_like(col))
        for _ in range(n_iter):
            x = x + c_w * operator.adjoint(r_w * (sinogram - operator.forward(x)))
            if nonneg:
                x = x.clamp_min(0.0)
        return x


def cgls(sinogram: torch.Tensor, operator: LinearOperator, n_iter: int = 20,
         x0: torch.Tensor | None = None) -> torch.Tensor:
    """CGLS: conjugate gradients on ``min ||A x - y||^2`` without forming ``A^T A`` (batched over leading dims).

    Args:
        sinogram: float ``[..., *range_shape]``.
        operator: any real CT operator.
        n_iter: iterations (two projections each); few iterations act as regularisation.
        x0: start ``[..., *domain_shape]``; zeros when None.

    Returns:
        float ``[..., *domain_shape]``; the residual ``||y - A x||`` does not increase.
    """
    dims_x, dims_y = len(operator.domain_shape), len(operator.range_shape)
    with torch.no_grad():
        x = _start(sinogram, operator, x0)
        r = sinogram - operator.forward(x)
        s = operator.adjoint(r)
        p = s.clone()
        gamma = inner(s, s, dims_x)
        for _ in range(n_iter):
            q = operator.forward(p)
            qq = inner(q, q, dims_y)
            alpha = torch.where(qq > 0, gamma / qq.clamp_min(1e-30), torch.zeros_like(qq))
            x = x + alpha.reshape(*alpha.shape, *(1,) * dims_x) * p
            r = r - alpha.reshape(*alpha.shape, *(1,) * dims_y) * q
            s = operator.adjoint(r)
            gamma_new = inner(s, s, dims_x)
            beta = torch.where(gamma > 0, gamma_new / gamma.clamp_min(1e-30), torch.zeros_like(gamma))
            p = s + beta.reshape(*beta.shape, *(1,) * dims_x) * p
            gamma = gamma_new
        return x
