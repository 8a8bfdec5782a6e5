"""CT forward models on ASTRA: parallel-beam and fan-beam 2D, cone-beam 3D.

Shapes (leading dimensions are batch dimensions and pass through):
    ParallelBeam2D, FanBeam2D:  image float32 [..., H, W]  -> sinogram float32 [..., n_angles, n_detectors]
    ConeBeam3D:                 volume float32 [..., D, H, W] -> projections float32 [..., n_angles, det_rows, det_cols]

Units and scaling
-----------------
* Lengths are in **pixel units**: the image pixel is a unit square centred on
  the grid, ``detector_spacing``, ``source_origin`` and ``origin_detector``
  are measured in pixel widths. For a physical pixel of ``p`` mm divide the
  millimetre distances by ``p``.
* The forward model returns line integrals in pixel units: a ray crossing a
  disk of radius ``r`` pixels of value 1 returns ``2 r`` whatever the detector
  spacing. An image holding attenuation per pixel (``mu [1/mm] * p [mm]``, see
  `recon.data.simulate.ct.hu_to_mu`) therefore gives dimensionless line integrals
  ``-ln(I / I0)``.
* The operator norm is about ``sqrt(n_angles * H)`` for an H x H image (the
  top singular vector is nearly flat and each view sums about H pixels per
  bin); estimate it with `operators.base.power_iteration` (shared with MRI):
  211 for 256x256 with 180 parallel views, 86 with 30 views.

Backends
--------
* Tensors on the CPU use ASTRA's CPU projectors, whose forward and back
  projection are exact transposes (``linear`` by default for parallel beam,
  ``strip`` or ``line`` selectable; ``line_fanflat`` or ``strip_fanflat`` for
  fan beam). Each call creates its projector and frees it on exit; nothing is
  kept in global state.
* Batches on the CPU (2 or more slices, e.g. the N posterior samples inside
  CG) go through ASTRA's own projection matrix of that projector, fetched once
  per operator (``astra.projector.matrix``) and kept as a torch sparse CSR
  matrix (and its transpose): one sparse-dense product per call instead of one
  ASTRA call per slice, the same numbers (it *is* ASTRA's matrix), about 8x
  faster for 8 slices of 256x256 at 60 views. ``cpu_matrix=False`` keeps the
  per-slice ASTRA calls, ``True`` uses the matrix for single slices too (as
  does the automatic choice once the matrix exists); the automatic choice
  skips geometries whose matrix would exceed `MATRIX_MAX_NNZ` entries (about
  12 bytes each, twice: the matrix and its transpose).
* Tensors on a CUDA device use ASTRA's CUDA projectors. ASTRA links 2D data
  in host memory only, so 2D slices are copied to the host and back; the 3D
  cone-beam projector links the GPU tensors directly (DLPack), no copies.
  The CUDA back projection is ASTRA's voxel-driven approximation of the
  transpose of its ray-driven forward projection (adjoint mismatch of order
  1e-2, not 1e-6 as on the CPU).
* ASTRA's 3D projectors exist only on CUDA: `ConeBeam3D` raises
  `CUDAUnavailableError` on a machine without a usable CUDA device.

Gradients flow through `forward` and `adjoint` (a ``torch.autograd.Function``
whose backward is the other projection), so the operators can sit inside
diffusion posterior sampling.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch

from .base import LinearOperator, OperatorShapeError

try:  # MRI needs no ASTRA: a broken install (e.g. its CUDA 12 libraries missing) must not stop the package importing
    import astra
    import astra.experimental as astra_direct
except ImportError as _exc:  # the CT operators' constructors raise ASTRAUnavailableError with this cause
    astra = astra_direct = None
    ASTRA_IMPORT_ERROR: ImportError | None = _exc
else:
    ASTRA_IMPORT_ERROR = None

PARALLEL_PROJECTORS = ("linear", "strip", "line")
FAN_PROJECTORS = ("line_fanflat", "strip_fanflat")
#: largest estimated projection matrix (non-zeros) built automatically for CPU batches (~12 bytes each, x2)
MATRIX_MAX_NNZ = 40_000_000


class CUDAUnavailableError(RuntimeError):
    """A CUDA projector was needed but this machine or ASTRA build has no CUDA."""


class ASTRAUnavailableError(ImportError):
    """A CT operator was asked for, but astra-toolbox could not be imported on this machine."""


def require_astra(what: str) -> None:
    """Raise `ASTRAUnavailableError` naming ``what`` and the import's own error when ASTRA did not import."""
    if astra is None:
        raise ASTRAUnavailableError(
            f"{what} needs ASTRA (astra-toolbox), which could not be imported here: {ASTRA_IMPORT_ERROR}. "
            "MRI does not need it; for CT, `pip install astra-toolbox` (its wheel also installs the CUDA 12 runtime "
            "and cuFFT it links against)")


def cuda_available() -> bool:
    """True when both torch and the installed ASTRA build can use a CUDA device (False without ASTRA)."""
    return bool(torch.cuda.is_available() and astra is not None and astra.use_cuda())


def _require_cuda(what: str) -> None:
    require_astra(what)
    if not torch.cuda.is_available():
        raise CUDAUnavailableError(f"{what} needs a CUDA device, but torch sees none on this machine")
    if not astra.use_cuda():
        raise CUDAUnavailableError(
            f"{what} needs ASTRA's CUDA projectors, but the installed astra-toolbox cannot use CUDA "
            "(CPU-only build or no working NVIDIA driver)"
        )


# -- geometry helpers -----------------------------------------------------
def sparse_view_angles(n_views: int, arc: float = math.pi) -> np.ndarray:
    """``n_views`` equispaced angles in ``[0, arc)`` radians, float64 ``[n_views]``.

    ``arc = pi`` is a full parallel-beam scan; use ``2 * pi`` for fan beam.
    """
    if int(n_views) != n_views or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if not math.isfinite(arc) or arc <= 0:
        raise ValueError(f"arc must be a positive finite angle in radians, got {arc!r}")
    return np.arange(int(n_views), dtype=np.float64) * (arc / n_views)


def limited_angle(arc_degrees: float, n_views: int) -> np.ndarray:
    """``n_views`` equispaced angles covering ``[0, arc_degrees)``, in radians, float64 ``[n_views]``."""
    if not math.isfinite(arc_degrees) or not 0 < arc_degrees <= 360:
        raise ValueError(f"arc_degrees must lie in (0, 360], got {arc_degrees!r}")
    return sparse_view_angles(n_views, math.radians(arc_degrees))


def _as_angles(angles: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(angles, torch.Tensor):
        angles = angles.detach().cpu().numpy()
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"angles must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("angles is empty: a CT geometry needs at least one projection angle")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"angles must be finite; entries {bad[:5].tolist()} are {a[bad[:5]].tolist()}")
    return a.copy()


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}")
    return v


def _positive_int(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _shape(name: str, shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {shape}")
    return tuple(_positive_int(f"{name} entry", s) for s in shape)


# -- autograd: forward and back projection, each the other's gradient -----
class _Projection(torch.autograd.Function):
    """``y = A x`` (adjoint=False: [..., *domain] -> [..., *range]) or ``x = A^T y`` (adjoint=True: back);
    the gradient of each is the other."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, op: "_AstraOperator", adjoint: bool) -> torch.Tensor:
        ctx.op, ctx.adjoint = op, adjoint
        return op._backproject(v) if adjoint else op._project(v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Projection.apply(grad, ctx.op, not ctx.adjoint), None, None


class _AstraOperator(LinearOperator):
    """Shared plumbing: validation, batching over leading dimensions, autograd."""

    is_complex = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32 [..., *domain_shape] -> float32 [..., *range_shape] (same device and dtype)."""
        self._check_real(x, "image")
        self.check_domain(x, "image")
        return _Projection.apply(x, self, False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """y: float32 [..., *range_shape] -> float32 [..., *domain_shape] (back projection A^T)."""
        self._check_real(y, "sinogram")
        self.check_range(y, "sinogram")
        return _Projection.apply(y, self, True)

    def to(self, device: torch.device | str) -> "_AstraOperator":
        """The operator follows the device of its input; returned unchanged."""
        return self

    def _check_real(self, t: torch.Tensor, name: str) -> None:
        if t.is_complex() or not t.is_floating_point():
            raise TypeError(f"{type(self).__name__}: {name} must be a real floating tensor, got {t.dtype}")

    def _project(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _backproject(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _Tomo2D(_AstraOperator):
    """A 2D ASTRA geometry applied slice by slice: image [..., H, W] <-> sinogram [..., A, D]."""

    def __init__(self, image_shape: Sequence[int], angles, n_detectors: int, detector_spacing: float,
                 projector: str, allowed: tuple[str, ...], cpu_matrix: bool | None = None):
        require_astra(type(self).__name__)
        self.cpu_matrix = cpu_matrix
        self._matrices: tuple[torch.Tensor, torch.Tensor] | None = None
        self.image_shape = _shape("image_shape", image_shape, 2)
        self.angles = _as_angles(angles)
        self.n_detectors = _positive_int("n_detectors", n_detectors)
        self.detector_spacing = _positive("detector_spacing", detector_spacing)
        if projector not in allowed:
            raise ValueError(f"{type(self).__name__}: projector must be one of {allowed}, got {projector!r}")
        self.projector_type = projector
        self.domain_shape = self.image_shape
        self.range_shape = (self.n_angles, self.n_detectors)

    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    # -- ASTRA geometry and projector handles ---------------------------
    def vol_geom(self) -> dict:
        """ASTRA volume geometry: H rows (y) x W columns (x), unit pixels centred on the origin."""
        return astra.create_vol_geom(*self.image_shape)

    def proj_geom(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextlib.contextmanager
    def projector(self, device: torch.device | str = "cpu") -> Iterator[int]:
        """Context manager yielding an ASTRA projector id for ``device``; freed on exit."""
        device = torch.device(device)
        if device.type == "cuda":
            _require_cuda(f"{type(self).__name__} on {device}")
            kind, options = "cuda", {"GPUIndex": device.index if device.index is not None else torch.cuda.current_device()}
        else:
            kind, options = self.projector_type, None
        pid = astra.create_projector(kind, self.proj_geom(), self.vol_geom(), options)
        try:
            yield pid
        finally:
            astra.projector.delete(pid)

    # -- validation -----------------------------------------------------
    def check_domain(self, x: torch.Tensor, name: str = "image") -> None:
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.image_shape:
            raise OperatorShapeError(
                f"{type(self).__name__}: {name} of shape {tuple(x.shape)} does not match the geometry's "
                f"image_shape {self.image_shape} (expected [..., {self.image_shape[0]}, {self.image_shape[1]}])"
            )

    def check_range(self, y: torch.Tensor, name: str = "sinogram") -> None:
        if y.dim() < 2:
            raise OperatorShapeError(f"{type(self).__name__}: {name} of shape {tuple(y.shape)} needs [..., views, detectors]")
        views, dets = y.shape[-2:]
        if views != self.n_angles:
            raise OperatorShapeError(
                f"{type(self).__name__}: {name} has {views} views (shape {tuple(y.shape)}) but the geometry has "
                f"{self.n_angles} angles"
            )
        if dets != self.n_detectors:
            raise OperatorShapeError(
                f"{type(self).__name__}: {name} has {dets} detector bins (shape {tuple(y.shape)}) but the geometry "
                f"has n_detectors={self.n_detectors}"
            )

    # -- the two projections, next to each other ----------------------------
    # ASTRA's signatures are direct_FP2D(projector, image, sinogram) and direct_BP2D(projector, image, sinogram);
    # both overwrite their output argument.
    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """Forward projection A x, slice by slice: [..., H, W] -> [..., n_angles, n_detectors]."""
        if self._use_matrix(x):
            return self._matrix_apply(x, self.range_shape, transpose=False)
        return self._slicewise(x, self.range_shape, lambda pid, img, sino: astra_direct.direct_FP2D(pid, img, sino))

    def _backproject(self, y: torch.Tensor) -> torch.Tensor:
        """Back projection A^T y, slice by slice: [..., n_angles, n_detectors] -> [..., H, W]."""
        if self._use_matrix(y):
            return self._matrix_apply(y, self.domain_shape, transpose=True)
        return self._slicewise(y, self.domain_shape, lambda pid, sino, img: astra_direct.direct_BP2D(pid, img, sino))

    # -- CPU batches: ASTRA's projection matrix as a torch sparse matrix ------
    def _use_matrix(self, t: torch.Tensor) -> bool:
        if t.device.type != "cpu" or self.cpu_matrix is False:
            return False
        if self.cpu_matrix or self._matrices is not None:
            return True
        n_slices = t.numel() // max(1, t.shape[-1] * t.shape[-2])
        est_nnz = self.n_angles * self.n_detectors * 2 * max(self.image_shape)
        return n_slices >= 2 and est_nnz <= MATRIX_MAX_NNZ

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as float32 sparse CSR tensors ``[A*D, H*W]`` and ``[H*W, A*D]`` (int32 indices), from
        ASTRA's CPU projector of this geometry; built on first use and kept by the operator."""
        if self._matrices is None:
            import warnings

            with self.projector("cpu") as pid:
                mid = astra.projector.matrix(pid)
                try:
                    m = astra.matrix.get(mid).tocsr()
                finally:
                    astra.matrix.delete(mid)
            mt = m.T.tocsr()

            def to_torch(a) -> torch.Tensor:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                    return torch.sparse_csr_tensor(torch.from_numpy(a.indptr.astype(np.int32)),
                                                   torch.from_numpy(a.indices.astype(np.int32)),
                                                   torch.from_numpy(a.data.astype(np.float32)), a.shape,
                                                   check_invariants=False)
            self._matrices = (to_torch(m), to_torch(mt))
        return self._matrices

    def _matrix_apply(self, t: torch.Tensor, out_shape: tuple[int, int], transpose: bool) -> torch.Tensor:
        """``A t`` (or ``A^T t``) for every 2D slice of the CPU tensor ``t`` in one sparse-dense product."""
        lead = t.shape[:-2]
        mat = self.matrices()[1 if transpose else 0]
        cols = t.detach().to(torch.float32).reshape(-1, t.shape[-2] * t.shape[-1]).T.contiguous()  # [in, B]
        out = (mat @ cols).T                                                                       # [B, out]
        return out.reshape(*lead, *out_shape).to(dtype=t.dtype).contiguous()

    def _slicewise(self, t: torch.Tensor, out_shape: tuple[int, int], run) -> torch.Tensor:
        """Apply ``run(projector_id, input_slice, output_slice)`` to every 2D slice of ``t``."""
        lead = t.shape[:-2]
        # ASTRA reads float32 host memory: a no-copy view on the CPU, one host copy on CUDA
        src = t.detach().to(dtype=torch.float32).reshape(-1, *t.shape[-2:]).cpu().contiguous().numpy()
        out = np.empty((src.shape[0], *out_shape), dtype=np.float32)
        if src.shape[0]:
            with self.projector(t.device) as pid:
                for b in range(src.shape[0]):
                    run(pid, src[b], out[b])
        return torch.from_numpy(out).reshape(*lead, *out_shape).to(device=t.device, dtype=t.dtype)


class ParallelBeam2D(_Tomo2D):
    """Parallel-beam projector ``A``: image float32 [..., H, W] -> sinogram float32 [..., n_angles, n_detectors].

    Args:
        image_shape: ``(H, W)`` in pixels.
        angles: projection angles in radians, ``[n_angles]`` (see `sparse_view_angles`, `limited_angle`).
        n_detectors: detector bins per view; cover the image diagonal (``ceil(sqrt(H^2 + W^2) / spacing)``)
            to see the whole image.
        detector_spacing: bin width in pixel units (default 1.0).
        projector: CPU projector, ``"linear"`` (default), ``"strip"`` or ``"line"``; CUDA tensors use ``"cuda"``.
        cpu_matrix: CPU batches through ASTRA's projection matrix (None: automatic, see the module docstring).
    """

    def __init__(self, image_shape: Sequence[int], angles, n_detectors: int, detector_spacing: float = 1.0,
                 projector: str = "linear", cpu_matrix: bool | None = None):
        super().__init__(image_shape, angles, n_detectors, detector_spacing, projector, PARALLEL_PROJECTORS,
                         cpu_matrix)

    def proj_geom(self) -> dict:
        """ASTRA ``parallel`` geometry (fresh dict)."""
        return astra.create_proj_geom("parallel", self.detector_spacing, self.n_detectors, self.angles)

    def __repr__(self) -> str:
        return (f"ParallelBeam2D(image_shape={self.image_shape}, n_angles={self.n_angles}, n_detectors={self.n_detectors}, "
                f"detector_spacing={self.detector_spacing}, projector={self.projector_type!r})")


class FanBeam2D(_Tomo2D):
    """Flat-detector fan-beam projector: image float32 [..., H, W] -> sinogram float32 [..., n_angles, n_detectors].

    Args:
        image_shape: ``(H, W)`` in pixels.
        angles: source angles in radians, ``[n_angles]`` (a full scan covers ``2 pi``).
        n_detectors: detector bins per view.
        detector_spacing: bin width *on the detector* in pixel units (magnification
            ``(source_origin + origin_detector) / source_origin`` applies at the centre of rotation).
        source_origin: source to centre-of-rotation distance, pixel units.
        origin_detector: centre-of-rotation to detector distance, pixel units.
        projector: CPU projector, ``"line_fanflat"`` (default) or ``"strip_fanflat"``; CUDA tensors use ``"cuda"``.
        cpu_matrix: CPU batches through ASTRA's projection matrix (None: automatic, see the module docstring).
    """

    def __init__(self, image_shape: Sequence[int], angles, n_detectors: int, detector_spacing: float,
                 source_origin: float, origin_detector: float, projector: str = "line_fanflat",
                 cpu_matrix: bool | None = None):
        super().__init__(image_shape, angles, n_detectors, detector_spacing, projector, FAN_PROJECTORS, cpu_matrix)
        self.source_origin = _positive("source_origin", source_origin)
        self.origin_detector = _positive("origin_detector", origin_detector, allow_zero=True)
        half_diag = 0.5 * math.hypot(*self.image_shape)
        if self.source_origin <= half_diag:
            raise ValueError(
                f"FanBeam2D: source_origin={self.source_origin} puts the source inside the image "
                f"(half diagonal {half_diag:.1f} pixels); distances are in pixel units"
            )

    def proj_geom(self) -> dict:
        """ASTRA ``fanflat`` geometry (fresh dict)."""
        return astra.create_proj_geom("fanflat", self.detector_spacing, self.n_detectors, self.angles,
                                      self.source_origin, self.origin_detector)

    def __repr__(self) -> str:
        return (f"FanBeam2D(image_shape={self.image_shape}, n_angles={self.n_angles}, n_detectors={self.n_detectors}, "
                f"detector_spacing={self.detector_spacing}, source_origin={self.source_origin}, "
                f"origin_detector={self.origin_detector}, projector={self.projector_type!r})")


class ConeBeam3D(_AstraOperator):
    """Circular cone-beam projector (CUDA only): volume [..., D, H, W] -> projections [..., n_angles, det_rows, det_cols].

    Args:
        volume_shape: ``(D, H, W)`` = (slices along the rotation axis z, rows y, columns x), unit voxels.
        angles: source angles in radians, ``[n_angles]``.
        det_rows, det_cols: detector size in pixels (rows run along z).
        source_origin, origin_detector: source to rotation axis and rotation axis to detector, voxel units.
        det_spacing: ``(row spacing, column spacing)`` on the detector, voxel units.

    Raises:
        CUDAUnavailableError: on construction or application without a usable CUDA device
            (ASTRA's 3D projectors exist only on CUDA).

    Tensors on a CUDA device are linked into ASTRA without copies; CPU tensors are copied by ASTRA.
    """

    def __init__(self, volume_shape: Sequence[int], angles, det_rows: int, det_cols: int, source_origin: float,
                 origin_detector: float, det_spacing: tuple[float, float] = (1.0, 1.0)):
        _require_cuda("ConeBeam3D")
        self.volume_shape = _shape("volume_shape", volume_shape, 3)
        self.angles = _as_angles(angles)
        self.det_rows = _positive_int("det_rows", det_rows)
        self.det_cols = _positive_int("det_cols", det_cols)
        if len(det_spacing) != 2:
            raise ValueError(f"det_spacing must be (row spacing, column spacing), got {det_spacing!r}")
        self.det_spacing = (_positive("det_spacing[0]", det_spacing[0]), _positive("det_spacing[1]", det_spacing[1]))
        self.source_origin = _positive("source_origin", source_origin)
        self.origin_detector = _positive("origin_detector", origin_detector, allow_zero=True)
        self.domain_shape = self.volume_shape
        self.range_shape = (self.n_angles, self.det_rows, self.det_cols)

    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    def vol_geom(self) -> dict:
        d, h, w = self.volume_shape
        return astra.create_vol_geom(h, w, d)

    def proj_geom(self) -> dict:
        return astra.create_proj_geom("cone", self.det_spacing[1], self.det_spacing[0], self.det_rows, self.det_cols,
                                      self.angles, self.source_origin, self.origin_detector)

    @contextlib.contextmanager
    def projector(self, device: torch.device | str) -> Iterator[int]:
        """Context manager yielding an ASTRA ``cuda3d`` projector id; freed on exit."""
        _require_cuda("ConeBeam3D")
        device = torch.device(device)
        index = device.index if device.type == "cuda" and device.index is not None else torch.cuda.current_device()
        pid = astra.create_projector("cuda3d", self.proj_geom(), self.vol_geom(), {"GPUIndex": index})
        try:
            yield pid
        finally:
            astra.projector3d.delete(pid)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """A x per volume: [..., D, H, W] -> [..., A, rows, cols]; ASTRA's own layout is [rows, A, cols]."""
        vols = x.detach().to(torch.float32).reshape(-1, *self.volume_shape).contiguous()
        out = torch.empty(vols.shape[0], self.det_rows, self.n_angles, self.det_cols, device=x.device)
        with self._linked(x.device) as (pid, link):
            for b in range(vols.shape[0]):
                astra_direct.direct_FP3D(pid, link(vols[b]), link(out[b]))  # writes out[b] in place
        return out.permute(0, 2, 1, 3).reshape(*x.shape[:-3], *self.range_shape).to(x.dtype)

    def _backproject(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y per volume: [..., A, rows, cols] -> [..., D, H, W]."""
        projs = y.detach().to(torch.float32).reshape(-1, *self.range_shape).permute(0, 2, 1, 3).contiguous()
        out = torch.empty(projs.shape[0], *self.volume_shape, device=y.device)
        with self._linked(y.device) as (pid, link):
            for b in range(projs.shape[0]):
                astra_direct.direct_BP3D(pid, link(out[b]), link(projs[b]))  # writes out[b] in place
        return out.reshape(*y.shape[:-3], *self.volume_shape).to(y.dtype)

    @contextlib.contextmanager
    def _linked(self, device: torch.device):
        """Yield ``(projector id, link)``: ``link`` hands a contiguous tensor to ASTRA without copying it
        (the tensor itself via DLPack on CUDA, a shared numpy view on the CPU)."""
        on_gpu = device.type == "cuda"
        with self.projector(device) as pid:
            if on_gpu:
                torch.cuda.synchronize(device)  # torch kernels that wrote the inputs must be complete
            yield pid, (lambda t: t) if on_gpu else (lambda t: t.numpy())
            if on_gpu:
                torch.cuda.synchronize(device)

    def __repr__(self) -> str:
        return (f"ConeBeam3D(volume_shape={self.volume_shape}, n_angles={self.n_angles}, det=({self.det_rows}, "
                f"{self.det_cols}), source_origin={self.source_origin}, origin_detector={self.origin_detector})")
