"""The output directory of `recon reconstruct`: which files an input owns, one lock per output name,
clean-up of temporaries left by killed runs, and the checks made before any work.

Every output of input ``NAME`` (``NAME.h5``, ``NAME.png``, ``NAME.json``, exports) is written to a
temporary ``.FINAL.XXXXXXXX.tmp...`` beside it and renamed into place (`recon.pipeline.writers.atomic_path`).
A run holds ``.NAME.lock`` (an advisory `fcntl` lock) while it works on ``NAME``; only the holder
writes or removes ``NAME``'s files, so two runs on one ``--out`` never write the same output.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
import json
from pathlib import Path
from typing import Any, Iterable

import h5py

_TMP_TAIL = re.compile(r"[A-Za-z0-9_]{8}\.tmp.*")


class OutputPathError(ValueError):
    """An output path that would overwrite an input, or two inputs that write one output name."""


def output_names(name: str) -> list[str]:
    """File and folder names written for input stem `name` (NAME.json last)."""
    return [f"{name}.h5", f"{name}.png", f"{name}_mean.nii.gz", f"{name}_std.nii.gz", f"{name}_mean_dicom",
            f"{name}_std_dicom", f"{name}.json"]


def check_paths(inputs: Iterable[Path], out_dir: Path) -> None:
    """Refuse outputs that resolve to an input file, and two inputs that share an output name."""
    inputs = list(inputs)
    resolved = {p.resolve(): p for p in inputs}
    owner: dict[str, Path] = {}
    for p in inputs:
        name = p.stem
        if name in owner and owner[name].resolve() != p.resolve():
            raise OutputPathError(f"{owner[name]} and {p} would both write {out_dir / name}.*; "
                                  "rename one or reconstruct them into different --out folders")
        owner[name] = p
        for out_name in output_names(name):
            target = (out_dir / out_name).resolve()
            if target in resolved:
                raise OutputPathError(f"--out {out_dir}: output {out_dir / out_name} is the input file "
                                      f"{resolved[target]}; choose another --out folder (inputs are never overwritten)")


def check_writable(out_dir: Path) -> None:
    """Create `out_dir` if needed and prove a file can be created there (before any work)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"--out {out_dir}: cannot write there ({e.strerror or e})") from None


def check_free_space(out_dir: Path, n_bytes: int, what: str) -> None:
    """Raise OSError(ENOSPC) naming `what` when `out_dir` has less than `n_bytes` (+ 1 MiB) free."""
    free = shutil.disk_usage(out_dir).free
    if free < n_bytes + (1 << 20):
        raise OSError(errno.ENOSPC, f"{what} needs about {n_bytes / 2**20:.1f} MiB but {out_dir} has "
                                    f"{free / 2**20:.1f} MiB free; nothing was written")


def _is_temporary_of(entry: str, final: str) -> bool:
    prefix = f".{final}."
    return entry.startswith(prefix) and _TMP_TAIL.fullmatch(entry[len(prefix):]) is not None


def remove_stale_temporaries(out_dir: Path, name: str) -> list[Path]:
    """Delete temporaries of `name`'s outputs left by a killed run (call while holding `name`'s lock)."""
    removed = []
    finals = output_names(name)
    for entry in os.listdir(out_dir) if out_dir.is_dir() else []:
        if any(_is_temporary_of(entry, final) for final in finals):
            p = out_dir / entry
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class OutputLock:
    """Exclusive, non-blocking lock on output name `name` in `out_dir` (``.NAME.lock``).

    ``acquire()`` returns False when another process holds it. The lock file is removed on release;
    a process that locked a file removed meanwhile retries on the new one, so two holders never coexist.
    """

    def __init__(self, out_dir: Path, name: str):
        self.path = out_dir / f".{name}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the file we locked was removed by its previous holder: lock the new one

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------
# what is already in the output folder
# ---------------------------------------------------------------------------
def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    return {"h5": out_dir / f"{name}.h5", "png": out_dir / f"{name}.png", "json": out_dir / f"{name}.json"}


def source_record(path: Path) -> dict[str, Any]:
    """Where an input came from and which version of it (size, modification time)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _written_by_us(path: Path) -> bool:
    """True for an HDF5 file that `write_outputs` wrote (it carries our `settings_hash` attribute)."""
    try:
        with h5py.File(path, "r") as f:
            return "settings_hash" in f.attrs and "software_version" in f.attrs
    except OSError:
        return False


def completed_state(out_dir: Path, name: str, source: dict[str, Any], settings_hash: str) -> str:
    """"complete" when NAME's outputs exist and were made from this input with these settings;
    "missing" (some output absent or unreadable), "settings" (other settings or a changed input file),
    "other-source" (another input file of the same name), or "foreign" (OUT/NAME.h5 exists and was not
    written by `recon reconstruct`: never overwritten)."""
    paths = output_paths(out_dir, name)
    if paths["h5"].exists() and not _written_by_us(paths["h5"]):
        return "foreign"
    if not all(p.exists() for p in paths.values()):
        return "missing"
    try:
        done = json.loads(paths["json"].read_text())
    except (OSError, ValueError):
        return "missing"
    previous = done.get("source") or {}
    if previous.get("path") != source["path"]:
        return "other-source"
    same_file = previous.get("size") == source["size"] and previous.get("mtime_ns") == source["mtime_ns"]
    if not same_file or done.get("settings_hash") != settings_hash:
        return "settings"
    return "complete"
