"""Result files of `recon reconstruct`: NAME.h5, NAME.png, NAME.json, and NIfTI / DICOM exports.

Every file is written to a temporary name in the output folder and renamed into place, so an
interrupted run never leaves a file that looks complete. NAME.json is written last: its presence
marks the input as done.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recon.data.io import atomic_h5, atomic_path


def json_safe(obj: Any) -> Any:
    """Strict-JSON values: non-finite floats become null, numpy scalars and arrays become Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """`obj` as strict JSON (`json_safe`; anything else unknown as its str), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str))


def write_result_h5(path: Path, datasets: dict[str, np.ndarray | None], groups: dict[str, dict[str, np.ndarray]],
                    attrs: dict[str, Any], group_attrs: dict[str, dict[str, Any]] | None = None) -> None:
    """Top-level datasets, one group per solver (``solvers/NAME/{mean,std,samples}``), and attributes
    (of the file, and per group in `group_attrs`)."""
    with atomic_h5(path) as f:
        for name, data in datasets.items():
            if data is not None:
                f.create_dataset(name, data=data, compression="gzip", compression_opts=4)
        for gname, members in groups.items():
            g = f.create_group(gname)
            for name, data in members.items():
                if data is not None:
                    g.create_dataset(name, data=data, compression="gzip", compression_opts=4)
            _set_attrs(g, (group_attrs or {}).get(gname, {}))
        _set_attrs(f, attrs)


def _set_attrs(obj: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        obj.attrs[k] = v if isinstance(v, (int, float, str, np.number)) else json.dumps(json_safe(v), default=str)


def write_panel(path: Path, reference: np.ndarray | None, first: np.ndarray, means: dict[str, np.ndarray],
                primary_std: np.ndarray | None, primary: str, title: str, first_name: str = "zero-filled",
                interval_width: np.ndarray | None = None, interval_calibrated: bool = True) -> None:
    """reference | zero-filled (or FBP) | each method's mean | |error| of the primary method | its std |
    its 95% interval width (titled "uncalibrated" when the run's JSON flags it so).

    Images share one intensity window (0 to the 99.5th percentile of the reference, or of `first`);
    the error uses the same window scaled by 0.25; std has its own colour bar.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray, str]] = []
    if reference is not None:
        panels.append(("reference", reference, "img"))
    if first_name not in means:
        panels.append((first_name, first, "img"))
    panels += [(name, img, "img") for name, img in means.items()]
    if reference is not None and primary in means:
        panels.append((f"|error| {primary}", np.abs(means[primary] - reference), "err"))
    if primary_std is not None:
        panels.append((f"std {primary}", primary_std, "std"))
    if interval_width is not None:
        flag = "" if interval_calibrated else "\n(uncalibrated)"
        panels.append((f"95% interval width {primary}{flag}", interval_width, "std"))
    vmax = float(np.percentile(reference if reference is not None else first, 99.5)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, (name, img, kind) in zip(axes[0], panels):
        if kind == "img":
            im = ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
        elif kind == "err":
            im = ax.imshow(img, cmap="magma", vmin=0, vmax=0.25 * vmax)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        else:
            im = ax.imshow(img, cmap="viridis", vmin=0, vmax=float(np.percentile(img, 99.5)) or 1.0)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def export_nifti(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    """[slices, H, W] -> NIfTI (x = W, y = H, z = slices), float32, voxel size `spacing_mm` (x, y, z)."""
    import nibabel as nib
    data = np.ascontiguousarray(np.transpose(volume.astype(np.float32), (2, 1, 0)))
    affine = np.diag([spacing_mm[0], spacing_mm[1], spacing_mm[2], 1.0])
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(data, affine), str(tmp))


def export_dicom(folder: Path, volume: np.ndarray, series_description: str, modality: str = "MR",
                 spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0), patient_id: str = "ANON",
                 intercept: float = 0.0) -> None:
    """[slices, H, W] non-negative -> a DICOM series (one file per slice, 16-bit, value = pixel * slope +
    `intercept`, e.g. -1024 for CT volumes given as HU + 1024), written to a temporary folder and renamed."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    volume = np.clip(volume, 0, None)
    vmax = float(volume.max()) or 1.0
    slope = vmax / 65535.0
    study, series = generate_uid(), generate_uid()
    now = _dt.datetime.now()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for i, img in enumerate(volume):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(tmp / f"{i:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.FrameOfReferenceUID = study
            ds.Modality, ds.SeriesDescription = modality, series_description
            ds.PatientID, ds.PatientName = patient_id, patient_id
            ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
            ds.StudyTime = now.strftime("%H%M%S")
            ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
            ds.ImagePositionPatient = [0.0, 0.0, float(i * spacing_mm[2])]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[0])]
            ds.SliceThickness = float(spacing_mm[2])
            ds.Rows, ds.Columns = img.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
            ds.PixelData = np.clip(np.round(img / slope), 0, 65535).astype(np.uint16).tobytes()
            ds.save_as(tmp / f"{i:04d}.dcm", enforce_file_format=True)
        if folder.exists():
            shutil.rmtree(folder)
        os.chmod(tmp, 0o755)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
