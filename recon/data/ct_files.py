"""CT data on disk: image volumes in Hounsfield units and measured sinograms.

Volumes
-------
* HDF5: dataset ``volume`` ``[slices, H, W]`` (int16 or float, HU) with attribute
  ``spacing_mm_xyz = (x, y, z)`` in mm (x along W, y along H, z across slices);
  this is the layout of ``../shared/data/ct/head_ct.h5``.
* DICOM: a directory holding one CT series (one file per slice). Slices are
  ordered along the slice normal, pixel values converted to HU with
  ``RescaleSlope`` / ``RescaleIntercept``.

Sinograms (schema version 1, see docs/ct.md)
--------------------------------------------
HDF5 file with

* ``sinogram``: float32 ``[slices, views, detectors]``, line integrals
  ``-ln(I / I0)`` (dimensionless);
* ``angles_rad``: float64 ``[views]``, projection angles (ASTRA convention);
* root attributes ``schema_version`` (1), ``geometry`` (``"parallel"`` or
  ``"fanflat"``), ``detector_spacing_mm``, ``pixel_size_mm`` (the
  reconstruction grid), ``image_shape`` ``(H, W)``, for ``fanflat`` also
  ``source_origin_mm`` and ``origin_detector_mm``; optional ``I0``
  (incident photons per bin) and ``mu_water_per_mm``.

Anything that does not fit raises `CTFormatError`, naming the file and the problem.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from operators.ct import FanBeam2D, ParallelBeam2D

SINOGRAM_SCHEMA_VERSION = 1
GEOMETRIES = ("parallel", "fanflat")


class CTFormatError(ValueError):
    """A CT volume or sinogram file does not follow the expected layout."""


# -- volumes ----------------------------------------------------------------
@dataclass(frozen=True)
class CTVolume:
    """An image volume in HU.

    Attributes:
        hu: float32 ``[slices, H, W]``.
        spacing_mm_xyz: voxel size ``(x, y, z)`` in mm (x along W, y along H).
        source: the file or directory it came from.
    """

    hu: np.ndarray
    spacing_mm_xyz: tuple[float, float, float]
    source: str

    @property
    def pixel_size_mm(self) -> float:
        """In-plane pixel size (x), the factor of `recon.data.simulate.ct.hu_to_mu`."""
        return self.spacing_mm_xyz[0]


def read_ct_volume(path: str | os.PathLike, slices: Sequence[int] | slice | None = None) -> CTVolume:
    """Read a HU volume from an HDF5 file or a DICOM series directory (or one DICOM file).

    Args:
        path: ``.h5``/``.hdf5`` file, DICOM directory, or single DICOM file.
        slices: optional selection along the slice axis (HDF5 only: a slice or increasing indices).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CT volume not found: {p}")
    if p.is_file() and h5py.is_hdf5(p):
        return _read_hdf5_volume(p, slices)
    if slices is not None:
        raise ValueError(f"{p}: slice selection is supported for HDF5 volumes only; index the returned hu array")
    return _read_dicom_series(p)


def _read_hdf5_volume(p: Path, slices: Sequence[int] | slice | None) -> CTVolume:
    with h5py.File(p, "r") as f:
        if "volume" not in f:
            raise CTFormatError(f"{p}: no 'volume' dataset (found {sorted(f.keys())})")
        ds = f["volume"]
        if ds.ndim != 3:
            raise CTFormatError(f"{p}: 'volume' must be [slices, H, W], got shape {ds.shape}")
        if not (np.issubdtype(ds.dtype, np.integer) or np.issubdtype(ds.dtype, np.floating)):
            raise CTFormatError(f"{p}: 'volume' must hold integer or float HU, got {ds.dtype}")
        spacing = ds.attrs.get("spacing_mm_xyz", f.attrs.get("spacing_mm_xyz"))
        if spacing is None:
            raise CTFormatError(f"{p}: attribute 'spacing_mm_xyz' (x, y, z in mm) is missing")
        spacing = tuple(float(s) for s in np.asarray(spacing).ravel())
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise CTFormatError(f"{p}: 'spacing_mm_xyz' must be three positive numbers, got {spacing}")
        sel = slice(None) if slices is None else slices
        if not isinstance(sel, slice):
            sel = list(sel)
        hu = np.asarray(ds[sel], dtype=np.float32)
        units = ds.attrs.get("units", f.attrs.get("units"))
    check_hu(hu, str(p), units)
    return CTVolume(hu=hu, spacing_mm_xyz=spacing, source=str(p))


# Air is -1000 HU and dense bone about +2000; a head or body volume spans at least soft tissue to air.
HU_PLAUSIBLE = (-1200.0, 32767.0)
HU_MIN_SPAN = 200.0


def check_hu(hu: np.ndarray, source: str, units: object = None, declared_hu: bool = False) -> None:
    """Refuse volumes that are not finite Hounsfield units.

    A ``units`` attribute, when present, must say HU. Values must lie inside `HU_PLAUSIBLE` and, unless the
    format declares HU (`declared_hu`: DICOM CT rescaled with RescaleSlope/Intercept, or units='HU'), span at
    least `HU_MIN_SPAN` (a volume in [0, 1] or in attenuation per mm does not).
    """
    if isinstance(units, bytes):
        units = units.decode(errors="replace")
    if units is not None and str(units).strip().upper() not in ("HU", "HOUNSFIELD", "HOUNSFIELD UNITS"):
        raise CTFormatError(f"{source}: 'volume' has units '{units}'; reconstruct needs Hounsfield units (HU): "
                            "convert the volume, e.g. HU = 1000 * (mu - mu_water) / mu_water")
    finite = np.isfinite(hu)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise CTFormatError(f"{source}: 'volume' contains NaN or Inf (first at slice {bad[0]})")
    if hu.size == 0:
        raise CTFormatError(f"{source}: 'volume' is empty, shape {hu.shape}")
    lo, hi = float(hu.min()), float(hu.max())
    declared_hu = declared_hu or units is not None
    if lo < HU_PLAUSIBLE[0] or hi > HU_PLAUSIBLE[1] or (hi - lo < HU_MIN_SPAN and not declared_hu):
        raise CTFormatError(f"{source}: 'volume' values span [{lo:.4g}, {hi:.4g}], which does not look like HU "
                            f"(expected within [{HU_PLAUSIBLE[0]:.0f}, {HU_PLAUSIBLE[1]:.0f}] with air near -1000); "
                            "store HU, or set the attribute units='HU' if these values are HU")


def _read_dicom_series(p: Path) -> CTVolume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file())
    datasets = []
    for q in files:
        try:
            ds = pydicom.dcmread(q)
        except InvalidDicomError:
            continue
        if "PixelData" in ds:
            datasets.append(ds)
    if not datasets:
        raise CTFormatError(f"{p}: no DICOM images found")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise CTFormatError(f"{p}: holds {len(series)} DICOM series; put one series per directory")
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise CTFormatError(f"{p}: slices have different sizes {sorted(shapes)}")

    def position(ds) -> float:
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            return float(np.dot(np.cross(o[:3], o[3:]), np.asarray(ds.ImagePositionPatient, dtype=np.float64)))
        return float(ds.get("InstanceNumber", 0))

    datasets.sort(key=position)
    hu = np.stack([ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1.0))
                   + float(ds.get("RescaleIntercept", 0.0)) for ds in datasets])
    first = datasets[0]
    if "PixelSpacing" not in first:
        raise CTFormatError(f"{p}: DICOM attribute PixelSpacing is missing")
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)  # (between rows = y, between columns = x)
    positions = np.array([position(ds) for ds in datasets])
    if len(datasets) > 1 and "ImagePositionPatient" in first:
        dz = float(np.median(np.diff(positions)))
    else:
        dz = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)))
    if not dz > 0:
        raise CTFormatError(f"{p}: slices share one position; cannot infer the slice spacing")
    check_hu(hu, str(p), declared_hu=True)
    return CTVolume(hu=hu, spacing_mm_xyz=(col_mm, row_mm, dz), source=str(p))


# -- sinograms --------------------------------------------------------------
@dataclass(frozen=True)
class CTGeometry:
    """A 2D acquisition geometry in physical units (mm); `operator` converts to pixel units.

    Attributes:
        kind: ``"parallel"`` or ``"fanflat"``.
        angles: float64 ``[views]`` radians.
        n_detectors: detector bins per view.
        detector_spacing_mm: bin width on the detector.
        pixel_size_mm: pixel size of the reconstruction grid.
        image_shape: ``(H, W)`` of the reconstruction grid.
        source_origin_mm, origin_detector_mm: fan-beam distances (None for parallel beam).
    """

    kind: str
    angles: np.ndarray
    n_detectors: int
    detector_spacing_mm: float
    pixel_size_mm: float
    image_shape: tuple[int, int]
    source_origin_mm: float | None = None
    origin_detector_mm: float | None = None

    def operator(self, projector: str | None = None) -> ParallelBeam2D | FanBeam2D:
        """The matching `operators.ct` projector, distances divided by ``pixel_size_mm``."""
        spacing = self.detector_spacing_mm / self.pixel_size_mm
        if self.kind == "parallel":
            return ParallelBeam2D(self.image_shape, self.angles, self.n_detectors, spacing, projector or "linear")
        if self.source_origin_mm is None or self.origin_detector_mm is None:
            raise ValueError("fanflat geometry needs source_origin_mm and origin_detector_mm")
        return FanBeam2D(self.image_shape, self.angles, self.n_detectors, spacing,
                         self.source_origin_mm / self.pixel_size_mm, self.origin_detector_mm / self.pixel_size_mm,
                         projector or "line_fanflat")


@dataclass(frozen=True)
class CTSinogram:
    """A measured sinogram: float32 ``data [slices, views, detectors]``, its geometry and dose."""

    data: np.ndarray
    geometry: CTGeometry
    I0: float | None = None
    mu_water_per_mm: float | None = None
    source: str = ""


def write_sinogram(path: str | os.PathLike, sinogram, geometry: CTGeometry, I0: float | None = None,
                   mu_water_per_mm: float | None = None) -> Path:
    """Write ``sinogram`` (``[slices, views, detectors]`` or ``[views, detectors]``, numpy or torch) in schema v1."""
    p = Path(path)
    data = np.asarray(sinogram.detach().cpu() if hasattr(sinogram, "detach") else sinogram, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    _check_sinogram(data.shape, geometry, str(p))
    with h5py.File(p, "w") as f:
        f.create_dataset("sinogram", data=data)
        f.create_dataset("angles_rad", data=np.asarray(geometry.angles, dtype=np.float64))
        f.attrs["schema_version"] = SINOGRAM_SCHEMA_VERSION
        f.attrs["geometry"] = geometry.kind
        f.attrs["detector_spacing_mm"] = float(geometry.detector_spacing_mm)
        f.attrs["pixel_size_mm"] = float(geometry.pixel_size_mm)
        f.attrs["image_shape"] = np.asarray(geometry.image_shape, dtype=np.int64)
        f.attrs["units"] = "line_integral"
        if geometry.kind == "fanflat":
            f.attrs["source_origin_mm"] = float(geometry.source_origin_mm)
            f.attrs["origin_detector_mm"] = float(geometry.origin_detector_mm)
        if I0 is not None:
            f.attrs["I0"] = float(I0)
        if mu_water_per_mm is not None:
            f.attrs["mu_water_per_mm"] = float(mu_water_per_mm)
    return p


def read_sinogram(path: str | os.PathLike, slices: Sequence[int] | slice | None = None) -> CTSinogram:
    """Read and validate a schema-v1 sinogram file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"sinogram file not found: {p}")
    if not h5py.is_hdf5(p):
        raise CTFormatError(f"{p}: not an HDF5 file")
    with h5py.File(p, "r") as f:
        for name in ("sinogram", "angles_rad"):
            if name not in f:
                raise CTFormatError(f"{p}: dataset '{name}' is missing (found {sorted(f.keys())})")
        a = f.attrs
        missing = [k for k in ("geometry", "detector_spacing_mm", "pixel_size_mm", "image_shape") if k not in a]
        if missing:
            raise CTFormatError(f"{p}: attributes {missing} are missing")
        kind = a["geometry"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        version = int(a.get("schema_version", SINOGRAM_SCHEMA_VERSION))
        if version != SINOGRAM_SCHEMA_VERSION:
            raise CTFormatError(f"{p}: schema_version {version} is not supported (expected {SINOGRAM_SCHEMA_VERSION})")
        if kind == "fanflat":
            for k in ("source_origin_mm", "origin_detector_mm"):
                if k not in a:
                    raise CTFormatError(f"{p}: fanflat geometry needs attribute '{k}'")
        shape = f["sinogram"].shape
        if len(shape) != 3:
            raise CTFormatError(f"{p}: 'sinogram' must be [slices, views, detectors], got shape {shape}")
        image_shape = tuple(int(v) for v in np.asarray(a["image_shape"]).ravel())
        geometry = CTGeometry(
            kind=kind,
            angles=np.asarray(f["angles_rad"][()], dtype=np.float64).ravel(),
            n_detectors=int(shape[2]),
            detector_spacing_mm=float(a["detector_spacing_mm"]),
            pixel_size_mm=float(a["pixel_size_mm"]),
            image_shape=image_shape,  # type: ignore[arg-type]
            source_origin_mm=float(a["source_origin_mm"]) if kind == "fanflat" else None,
            origin_detector_mm=float(a["origin_detector_mm"]) if kind == "fanflat" else None,
        )
        _check_sinogram(shape, geometry, str(p))
        sel = slice(None) if slices is None else (slices if isinstance(slices, slice) else list(slices))
        data = np.asarray(f["sinogram"][sel], dtype=np.float32)
        _check_line_integrals(data, str(p))
        I0 = float(a["I0"]) if "I0" in a else None
        mu_w = float(a["mu_water_per_mm"]) if "mu_water_per_mm" in a else None
    return CTSinogram(data=data, geometry=geometry, I0=I0, mu_water_per_mm=mu_w, source=str(p))


def _check_line_integrals(data: np.ndarray, source: str) -> None:
    """Line integrals -ln(I/I0) are finite and, up to noise, non-negative."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise CTFormatError(f"{source}: 'sinogram' contains NaN or Inf (first at slice {bad[0]}, view {bad[1]})")
    if data.size and float(data.min()) < -0.05 * max(float(data.max()), 1.0):
        raise CTFormatError(f"{source}: 'sinogram' has values down to {float(data.min()):.4g}; line integrals "
                            "-ln(I/I0) are non-negative (is this a log-transformed sinogram?)")


def _check_sinogram(shape: tuple[int, ...], g: CTGeometry, source: str) -> None:
    if g.kind not in GEOMETRIES:
        raise CTFormatError(f"{source}: geometry {g.kind!r} is not one of {GEOMETRIES}")
    if len(shape) != 3:
        raise CTFormatError(f"{source}: sinogram must be [slices, views, detectors], got shape {tuple(shape)}")
    angles = np.asarray(g.angles)
    if angles.ndim != 1 or angles.size == 0:
        raise CTFormatError(f"{source}: angles_rad must be a non-empty 1D array, got shape {angles.shape}")
    if not np.all(np.isfinite(angles)):
        raise CTFormatError(f"{source}: angles_rad holds non-finite values")
    if shape[1] != angles.size:
        raise CTFormatError(f"{source}: sinogram has {shape[1]} views but angles_rad has {angles.size} angles")
    if shape[2] != g.n_detectors:
        raise CTFormatError(f"{source}: sinogram has {shape[2]} detector bins but the geometry has {g.n_detectors}")
    for name in ("detector_spacing_mm", "pixel_size_mm"):
        v = getattr(g, name)
        if not (math.isfinite(v) and v > 0):
            raise CTFormatError(f"{source}: {name} must be positive, got {v}")
    if len(g.image_shape) != 2 or min(g.image_shape) < 1:
        raise CTFormatError(f"{source}: image_shape must be (H, W) with positive entries, got {g.image_shape}")
    if g.kind == "fanflat":
        if g.source_origin_mm is None or not g.source_origin_mm > 0:
            raise CTFormatError(f"{source}: source_origin_mm must be positive, got {g.source_origin_mm}")
        if g.origin_detector_mm is None or not g.origin_detector_mm >= 0:
            raise CTFormatError(f"{source}: origin_detector_mm must be non-negative, got {g.origin_detector_mm}")
