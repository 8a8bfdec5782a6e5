"""fastMRI HDF5 files: lazy reading, header parsing, recon-size crops, and writing.

The layout (fastMRI `mri_data.py`, see also ../shared/data/README.md):
    kspace                 complex64 [slices, coils, readout, phase] (single-coil: [slices, readout, phase])
    reconstruction_rss     float32 [slices, rH, rW]  (multi-coil target) / reconstruction_esc (single-coil)
    ismrmrd_header         ISMRMRD XML; encoded/recon matrix sizes and the phase-encode limits that give
                           the zero padding: padding_left = enc_y // 2 - center,
                           padding_right = padding_left + maximum + 1
    attrs                  acquisition, max, norm, patient_id, ...
"""
from __future__ import annotations

import io
import os
import tempfile
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch

from operators.fft import ifft2c

_NS = "{http://www.ismrm.org/ISMRMRD}"


class FastMRIFormatError(ValueError):
    """A file is not a usable fastMRI file; the message names the file and the problem."""


@dataclass(frozen=True)
class FastMRIHeader:
    """Sizes from the ISMRMRD header, computed exactly as fastMRI's `SliceDataset` does."""

    encoded_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int

    @property
    def acquired_lines(self) -> tuple[int, int]:
        """Half-open range ``[left, right)`` of phase-encode lines inside the encoding limits."""
        return self.padding_left, self.padding_right


def _xml_int(root: ET.Element, path: list[str], file: str) -> int:
    node = root.find("/".join(_NS + p for p in path))
    field_name = "/".join(path)
    if node is None or node.text is None:
        raise FastMRIFormatError(f"{file}: ismrmrd_header has no {field_name}")
    try:
        value = float(node.text)
    except ValueError:
        raise FastMRIFormatError(f"{file}: ismrmrd_header {field_name} is '{node.text.strip()}', not a number") from None
    if not np.isfinite(value) or value != int(value):
        raise FastMRIFormatError(f"{file}: ismrmrd_header {field_name} is '{node.text.strip()}', not an integer")
    return int(value)


def parse_header(xml: bytes | str, file: str = "<header>", phase_lines: int | None = None) -> FastMRIHeader:
    """Parse the ISMRMRD XML header of a fastMRI file."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise FastMRIFormatError(f"{file}: ismrmrd_header is not valid XML ({e})") from None
    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    enc_size = tuple(_xml_int(root, enc + [a], file) for a in "xyz")
    rec_size = tuple(_xml_int(root, rec + [a], file) for a in "xyz")
    center = _xml_int(root, lims + ["center"], file)
    maximum = _xml_int(root, lims + ["maximum"], file) + 1
    for name, size in (("encodedSpace", enc_size), ("reconSpace", rec_size)):
        if min(size[:2]) < 1:
            raise FastMRIFormatError(f"{file}: ismrmrd_header encoding/{name}/matrixSize is {size[0]} x {size[1]}; "
                                     "sizes must be positive")
    left = enc_size[1] // 2 - center
    return FastMRIHeader(enc_size, rec_size, left, left + maximum)  # type: ignore[arg-type]


def default_header(kspace_shape: tuple[int, ...]) -> FastMRIHeader:
    """Header for a file without one: everything acquired, recon size = image size."""
    ro, pe = kspace_shape[-2], kspace_shape[-1]
    return FastMRIHeader((ro, pe, 1), (ro, pe, 1), 0, pe)


class _LazySlices:
    """Slice-indexable view of an HDF5 dataset that validates what it reads."""

    def __init__(self, dset: h5py.Dataset, file: str, name: str):
        self._d, self._file, self._name = dset, file, name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._d.shape)

    def __len__(self) -> int:
        return self._d.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        arr = self._d[idx]
        if not np.isfinite(arr).all():
            raise FastMRIFormatError(f"{self._file}: '{self._name}' contains NaN or Inf (index {idx})")
        return arr


@dataclass
class FastMRIVolume:
    """An open fastMRI file. Use as a context manager or call `close()`.

    Attributes:
        kspace: lazy, indexable by slice -> numpy complex64 [coils, readout, phase] (or [readout, phase]).
        target: lazy `reconstruction_rss`/`reconstruction_esc`, or None.
        header: `FastMRIHeader`.
        attrs: the file's attributes.
    """

    path: Path
    kspace: _LazySlices
    target: _LazySlices | None
    header: FastMRIHeader
    attrs: dict[str, Any] = field(default_factory=dict)
    _file: h5py.File | None = None

    @property
    def n_slices(self) -> int:
        return len(self.kspace)

    @property
    def multicoil(self) -> bool:
        return len(self.kspace.shape) == 4

    @property
    def n_coils(self) -> int:
        return self.kspace.shape[1] if self.multicoil else 1

    def sampled_lines(self, slice_idx: int = 0) -> np.ndarray:
        """Boolean [phase] of the phase-encode lines present in a slice (non-zero anywhere)."""
        k = np.abs(self.kspace[slice_idx])
        axes = tuple(range(k.ndim - 1))
        return k.sum(axis=axes) > 0

    def acceleration(self, slice_idx: int = 0) -> float:
        """Acquired-range lines / sampled lines (1.0 for fully sampled data)."""
        left, right = self.header.acquired_lines
        lines = self.sampled_lines(slice_idx)[left:right]
        return float(len(lines) / max(int(lines.sum()), 1))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "FastMRIVolume":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_fastmri(path: str | os.PathLike) -> FastMRIVolume:
    """Open a fastMRI file lazily and validate its layout (not its every value: slices are checked when read)."""
    path = Path(path)
    if not path.exists():
        raise FastMRIFormatError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FastMRIFormatError(f"{path}: not an HDF5 file ({e})") from None
    try:
        if "kspace" not in f:
            raise FastMRIFormatError(f"{path}: no 'kspace' dataset (found: {sorted(f.keys())})")
        k = f["kspace"]
        if not isinstance(k, h5py.Dataset):
            raise FastMRIFormatError(f"{path}: 'kspace' is a {type(k).__name__.lower()}, not a dataset")
        if k.ndim not in (3, 4):
            raise FastMRIFormatError(
                f"{path}: 'kspace' has rank {k.ndim} (shape {k.shape}); expected [slices, coils, readout, phase] "
                "or [slices, readout, phase]")
        if not np.issubdtype(k.dtype, np.complexfloating):
            raise FastMRIFormatError(f"{path}: 'kspace' has dtype {k.dtype}; expected complex")
        if "ismrmrd_header" in f:
            header = parse_header(f["ismrmrd_header"][()], str(path))
        else:
            header = default_header(k.shape)
        if not 0 <= header.padding_left < header.padding_right <= k.shape[-1]:
            raise FastMRIFormatError(f"{path}: header phase limits [{header.padding_left}, {header.padding_right}) "
                                     f"do not fit {k.shape[-1]} phase-encode lines")
        tname = next((n for n in ("reconstruction_rss", "reconstruction_esc") if n in f), None)
        target = _LazySlices(_check_target(f[tname], tname, k.shape, path), str(path), tname) if tname else None
        return FastMRIVolume(path, _LazySlices(k, str(path), "kspace"), target, header, dict(f.attrs), f)
    except Exception:
        f.close()
        raise


def _check_target(d: h5py.Group | h5py.Dataset, name: str, kspace_shape: tuple[int, ...], path: Path) -> h5py.Dataset:
    """A target dataset must be real [slices, rH, rW] with one image per k-space slice."""
    if not isinstance(d, h5py.Dataset):
        raise FastMRIFormatError(f"{path}: '{name}' is a {type(d).__name__.lower()}, not a dataset")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise FastMRIFormatError(f"{path}: '{name}' has dtype {d.dtype}; expected real numbers")
    if d.ndim != 3:
        raise FastMRIFormatError(f"{path}: '{name}' has shape {d.shape}; expected [slices, H, W]")
    if d.shape[0] != kspace_shape[0]:
        raise FastMRIFormatError(f"{path}: '{name}' has {d.shape[0]} slices but 'kspace' has {kspace_shape[0]}")
    if min(d.shape[1:]) < 1:
        raise FastMRIFormatError(f"{path}: '{name}' has empty images, shape {d.shape}")
    return d


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Centre crop of the last two axes to ``shape`` (each side capped at the input's), as fastMRI crops."""
    h, w = x.shape[-2:]
    ch, cw = min(shape[0], h), min(shape[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top: top + ch, left: left + cw]


def recon_crop_shape(header: FastMRIHeader) -> tuple[int, int]:
    """(readout, phase) recon size: crops away readout oversampling and phase padding in image space."""
    return header.recon_size[0], header.recon_size[1]


def rss_target(kspace: torch.Tensor, header: FastMRIHeader) -> torch.Tensor:
    """RSS of the coil images cropped to the recon size: fastMRI's `reconstruction_rss`. [C, H, W] -> [rH, rW]."""
    from operators.fft import rss
    return center_crop(rss(ifft2c(kspace)), recon_crop_shape(header))


def _stable_rss_target(kspace: np.ndarray, header: FastMRIHeader) -> np.ndarray:
    """`rss_target` computed at unit scale and scaled back in float64, for k-space in any units."""
    peak = float(np.abs(kspace.astype(np.complex128)).max())
    if not peak > 0:
        return rss_target(torch.from_numpy(kspace.astype(np.complex64)), header).numpy()
    unit = rss_target(torch.from_numpy((kspace.astype(np.complex128) / peak).astype(np.complex64)), header)
    return unit.double().numpy() * peak


def _header_xml(encoded: tuple[int, int, int], recon: tuple[int, int, int], left: int, right: int) -> str:
    center = encoded[1] // 2 - left
    maximum = right - left - 1
    m = lambda s: f"<matrixSize><x>{s[0]}</x><y>{s[1]}</y><z>{s[2]}</z></matrixSize>"  # noqa: E731
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        f"<encoding><encodedSpace>{m(encoded)}</encodedSpace><reconSpace>{m(recon)}</reconSpace>"
        "<encodingLimits><kspace_encoding_step_1><minimum>0</minimum>"
        f"<maximum>{maximum}</maximum><center>{center}</center></kspace_encoding_step_1>"
        "<kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center>"
        "</kspace_encoding_step_2></encodingLimits><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    )


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path ``.NAME.XXXXXXXX.tmp<suffixes>`` beside `path`; rename it to `path` when the
    block succeeds, delete it on any failure (including KeyboardInterrupt / SIGTERM turned into one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """An h5py file built in memory and written to `path` through `atomic_path` when the block succeeds.

    HDF5 never touches the disk itself: a full disk or a signal during the write raises a Python error
    (no crash inside the HDF5 library) and leaves neither a partial file nor a temporary behind.
    """
    buffer = io.BytesIO()
    f = h5py.File(buffer, "w")
    try:
        yield f
    finally:
        f.close()
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(buffer.getbuffer())
        out.flush()
        os.fsync(out.fileno())


def write_fastmri(
    path: str | os.PathLike,
    kspace: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor | None = None,
    recon_size: tuple[int, int] | None = None,
    acquired: tuple[int, int] | None = None,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a file in the fastMRI layout (readable by fastMRI's `SliceDataset`), atomically.

    Args:
        kspace: complex [slices, coils, readout, phase] or [slices, readout, phase].
        target: float [slices, rH, rW]; stored as `reconstruction_rss` (multi-coil) or `reconstruction_esc`.
            When None for multi-coil data, the RSS target is computed from `kspace`.
        recon_size: (rH, rW); default (readout, phase) of the k-space.
        acquired: phase-encode range [left, right) inside the encoding limits; default all lines.
        attrs: extra attributes (acquisition, patient_id, ...); `max` and `norm` are set from the target.
    """
    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if k.ndim not in (3, 4) or not np.iscomplexobj(k):
        raise FastMRIFormatError(f"{path}: kspace to write must be complex [slices, (coils,) readout, phase], got {k.shape} {k.dtype}")
    if not np.isfinite(k).all():
        raise FastMRIFormatError(f"{path}: kspace to write contains NaN or Inf")
    ro, pe = k.shape[-2:]
    recon_size = recon_size or (ro, pe)
    left, right = acquired or (0, pe)
    header = FastMRIHeader((ro, pe, 1), (recon_size[0], recon_size[1], 1), left, right)
    multicoil = k.ndim == 4
    if target is None and multicoil:
        target = np.stack([_stable_rss_target(k[i], header) for i in range(k.shape[0])])
    tgt = None
    if target is not None:
        tgt = (target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)).astype(np.float32)
    with atomic_h5(path) as f:
        f.create_dataset("kspace", data=k.astype(np.complex64))
        f.create_dataset("ismrmrd_header", data=np.bytes_(_header_xml(header.encoded_size, header.recon_size, left, right)))
        if tgt is not None:
            f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc", data=tgt)
            f.attrs["max"] = float(tgt.max())
            f.attrs["norm"] = float(np.linalg.norm(tgt))
        f.attrs["acquisition"] = "SIMULATED"
        f.attrs["patient_id"] = Path(path).stem
        for key, val in (attrs or {}).items():
            f.attrs[key] = val
    return Path(path)


H5_SUFFIXES = (".h5", ".hdf5")


def iter_h5_files(inputs: list[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and directories into inputs: the ``*.h5`` / ``*.hdf5`` files inside a directory (any case,
    sorted; sub-directories are not entered), or the directory itself when it is a DICOM series (``*.dcm``)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in H5_SUFFIXES)
            if not found and any(q.suffix.lower() == ".dcm" for q in p.iterdir()):
                found = [p]  # a DICOM series folder (CT)
            yield from found
        else:
            yield p
