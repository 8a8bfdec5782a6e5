"""`recon reconstruct` under bad input, faults and batch use: nothing lost, nothing silently wrong.

Every case builds its own small files. Methods are the cheap ones (zero-filled, sense, fbp).
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from priors.registry import WEIGHTS_DIR, read_registry
from recon.cli import main as cli
from recon.commands.reconstruct import weights_record
from recon.data.io import write_fastmri
from recon.pipeline.outdir import OutputLock
from recon.data.simulate import simulate_multicoil
from tests.conftest import ROOT, write_h5

N = 48
FAST = ["--solver", "zero-filled", "--quiet", "--accel", "3", "--center-fraction", "0.25"]


def _kspace(n_slices: int = 2, seed: int = 0) -> np.ndarray:
    img = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True).astype(np.float32)
    imgs = torch.from_numpy(np.stack([np.roll(img, 2 * i, axis=1) for i in range(n_slices)]))
    k, _, _ = simulate_multicoil(imgs, n_coils=4, noise_std=0.002, seed=seed)
    return k.numpy()


def _mri(path: Path, n_slices: int = 2, scale: float = 1.0, **kw) -> Path:
    return write_fastmri(path, _kspace(n_slices) * scale, **kw)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json(path: Path) -> dict:
    def strict(x):
        raise ValueError(f"non-standard JSON constant {x}")
    return json.loads(path.read_text(), parse_constant=strict)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def _ct_volume(path: Path, hu: np.ndarray | None = None, units: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if hu is None:
        yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
        hu = np.where(xx**2 + yy**2 < 0.6, 40.0, -1000.0)[None]
    with h5py.File(path, "w") as f:
        d = f.create_dataset("volume", data=hu.astype(np.float32))
        d.attrs["spacing_mm_xyz"] = (1.0, 1.0, 1.0)
        if units is not None:
            d.attrs["units"] = units
    return path


# --------------------------------------------------------------------------- data loss
def test_out_pointing_at_the_input_folder_is_refused_before_work(tmp_path, capsys):
    src = _mri(tmp_path / "case.h5")
    before = _sha(src)
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path), *FAST])
    assert rc == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and str(src) in err
    assert _sha(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.h5"]


def test_disk_full_during_the_write_leaves_no_temporary_and_the_input_untouched(tmp_path, capsys, monkeypatch):
    import recon.data.io

    src = _mri(tmp_path / "in" / "case.h5")
    before = _sha(src)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(recon.data.io.os, "fsync", full)
    out = tmp_path / "out"
    rc = cli(["reconstruct", str(src), "--out", str(out), *FAST])
    assert rc == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(src) in err
    assert list(out.iterdir()) == []  # no temporary, no lock, no partial output
    assert _sha(src) == before


def test_too_little_free_space_is_found_before_writing(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    src = _mri(tmp_path / "in" / "case.h5")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 1
    assert "MiB free; nothing was written" in capsys.readouterr().err
    assert list(out.iterdir()) == []


_SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    import recon.pipeline.results as results
    from recon.data.io import atomic_path
    from recon.cli import main

    def slow_figure(path, *args, **kwargs):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            print("WRITING", flush=True)
            time.sleep(120)

    results._write_figure = slow_figure
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_during_a_write_removes_temporaries_and_a_rerun_finishes(tmp_path):
    src = _mri(tmp_path / "in" / "case.h5")
    before = _sha(src)
    out = tmp_path / "out"
    script = tmp_path / "slow.py"
    script.write_text(_SIGTERM_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), "reconstruct", str(src), "--out", str(out), *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    line = ""
    while "WRITING" not in line and time.time() - t0 < 240:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "WRITING" in line, proc.stderr.read()[-2000:]
    assert any(".tmp" in n for n in _hidden(out))  # the temporary exists while writing
    proc.terminate()
    _, err = proc.communicate(timeout=180)  # a hang guard: loaded 2-core machines have taken > 60 s
    assert proc.returncode == 143
    assert "terminated" in err
    assert _hidden(out) == []  # temporary and lock removed
    assert not (out / "case.json").exists()
    assert _sha(src) == before
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
    assert (out / "case.json").exists()


def test_stale_temporaries_of_a_killed_run_are_cleaned_and_others_kept(tmp_path):
    src = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".case.h5.abcd1234.tmp", out / ".case.png.zz_99xyz.tmp.png", out / ".case_mean_dicom.q1w2e3r4.tmp"]
    for p in stale[:2]:
        p.write_bytes(b"x")
    stale[2].mkdir()
    keep = out / ".casex.h5.abcd1234.tmp"  # another input's temporary
    keep.write_bytes(b"x")
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_a_second_run_skips_a_name_that_another_run_holds(tmp_path, capsys):
    src = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    out.mkdir()
    held = OutputLock(out, "case")
    assert held.acquire()
    try:
        assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
        assert "skip (in progress in another run)" in capsys.readouterr().out
        assert not (out / "case.json").exists()
        assert not OutputLock(out, "case").acquire()
    finally:
        held.release()
    assert not (out / ".case.lock").exists()
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
    assert (out / "case.json").exists() and _hidden(out) == []


def test_two_concurrent_runs_write_each_output_once_with_exports(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        _mri(src / f"case{i}.h5")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recon.cli", "reconstruct", str(src), "--out", str(out), *FAST, "--export", "dicom"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    for i in range(3):
        s = _json(out / f"case{i}.json")
        assert s["status"] == "ok"
        assert len(list((out / f"case{i}_mean_dicom").glob("*.dcm"))) == 2
    assert _hidden(out) == []


# --------------------------------------------------------------------------- one bad file, the batch goes on
def _malformed(path: Path, case: str) -> Path:
    """A file `reconstruct` must refuse; `case` names what is wrong with it."""
    k = _kspace(2)
    datasets = {
        "short_target": dict(kspace=k, reconstruction_rss=np.ones((1, N, N), np.float32)),
        "kspace_group": dict(kspace={"x": k}),
        "strings": dict(kspace=np.full((2, 4, 8, 8), b"ab")),
        "complex_target": dict(kspace=k, reconstruction_rss=np.ones((2, N, N), np.complex64)),
    }[case]
    return write_h5(path, **datasets)


@pytest.mark.parametrize("case,message", [
    ("short_target", "'reconstruction_rss' has 1 slices but 'kspace' has 2"),
    ("kspace_group", "'kspace' is a group, not a dataset"),
    ("strings", "expected complex"),
    ("complex_target", "expected real numbers"),
])
def test_a_malformed_file_is_one_error_line_and_later_files_are_done(tmp_path, capsys, case, message):
    bad = _malformed(tmp_path / "in" / f"a_{case}.h5", case)
    good = _mri(tmp_path / "in" / "b_good.h5")
    out = tmp_path / "out"
    assert cli(["reconstruct", str(bad), str(good), "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and message in err[0], err
    assert (out / "b_good.json").exists() and not list(out.glob("a_*"))
    assert cli(["info", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "b_good.h5" in captured.out


def test_a_ct_volume_and_a_directory_named_h5_inside_an_mri_batch(tmp_path, capsys):
    src = tmp_path / "in"
    _mri(src / "b_mri.h5")
    _ct_volume(src / "a_ct.h5")
    (tmp_path / "elsewhere").mkdir()
    (src / "c_link.h5").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "a_ct.h5: holds CT data" in err and "zero-filled" in err
    assert (out / "b_mri.json").exists() and not (out / "a_ct.json").exists()


def test_an_all_zero_slice_loses_only_itself(tmp_path, capsys):
    k = _kspace(3)
    k[1] = 0
    src = write_fastmri(tmp_path / "in" / "vol.h5", k)
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST, "--solver", "zero-filled,sense",
                "--slices", "0:3"]) == 1
    err = capsys.readouterr().err
    assert f"{src}: slice 1: k-space is all zero" in err
    s = _json(out / "vol.json")
    assert s["status"] == "partial" and s["slices"] == [0, 2] and "1" in s["failed_slices"]
    assert s["solvers"]["sense"]["psnr"] > 15
    with h5py.File(out / "vol.h5") as f:
        assert f["reconstruction"].shape == (2, N, N) and json.loads(f.attrs["slices"]) == [0, 2]


def test_a_failing_method_keeps_the_others(tmp_path, capsys, monkeypatch):
    import recon.pipeline.run

    real = recon.pipeline.run.run_method

    def flaky(name, problem, settings):
        if name == "sense":
            raise RuntimeError("solver exploded")
        return real(name, problem, settings)
    monkeypatch.setattr(recon.pipeline.run, "run_method", flaky)
    src = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST, "--solver", "sense,zero-filled"]) == 1
    assert "sense: slice 0: solver exploded (RuntimeError)" in capsys.readouterr().err
    s = _json(out / "case.json")
    assert s["solvers"]["sense"]["error"].startswith("solver exploded")
    assert s["solvers"]["zero-filled"]["psnr"] > 10 and s["primary"] == "zero-filled"
    assert any("primary method sense failed" in w for w in s["warnings"])
    with h5py.File(out / "case.h5") as f:
        assert "solvers/zero-filled/mean" in f and "solvers/sense" not in f and f.attrs["primary"] == "zero-filled"


def test_ccdf_from_the_unet_loads_the_unet_without_it_in_solver(tmp_path):
    # --set ccdf.init=unet alone must load the U-Net (it used to fail: "none is loaded")
    src = _mri(tmp_path / "in" / "case.h5", n_slices=1)
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST, "--solver", "ccdf", "--set", "ccdf.init=unet",
                "--nfe", "2", "--samples", "1"]) == 0
    s = _json(out / "case.json")
    assert s["solvers"]["ccdf"]["psnr"] > 10 and s["hparams"]["ccdf"]["init"] == "unet"


# --------------------------------------------------------------------------- silently wrong results
def test_an_all_zero_reference_gives_null_metrics_in_valid_json(tmp_path):
    src = write_fastmri(tmp_path / "in" / "case.h5", _kspace(2), target=np.zeros((2, N, N), np.float32))
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
    s = _json(out / "case.json")
    assert s["solvers"]["zero-filled"]["psnr"] is None and s["solvers"]["zero-filled"]["nmse"] is None
    assert any("all zero" in w for w in s["warnings"])


@pytest.mark.parametrize("scale", [1e30, 1e-25])
def test_results_do_not_depend_on_the_files_units(tmp_path, scale):
    out = tmp_path / "out"
    unit = _mri(tmp_path / "in" / "unit.h5")
    scaled = _mri(tmp_path / "in" / "scaled.h5", scale=scale)
    assert cli(["reconstruct", str(unit), str(scaled), "--out", str(out), *FAST,
                "--solver", "zero-filled,sense"]) == 0
    a, b = _json(out / "unit.json"), _json(out / "scaled.json")
    for m in ("zero-filled", "sense"):
        assert b["solvers"][m]["psnr"] == pytest.approx(a["solvers"][m]["psnr"], abs=0.01)
    assert b["noise_std"] == pytest.approx(a["noise_std"] * scale, rel=1e-3)
    with h5py.File(out / "scaled.h5") as f:
        mean = f["mean"][()]
        assert np.isfinite(mean).all() and mean.max() > 0


def test_an_acceleration_that_keeps_every_line_is_an_error(tmp_path, capsys):
    src = _mri(tmp_path / "in" / "case.h5")
    assert cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), *FAST, "--accel", "1.0001"]) == 1
    err = capsys.readouterr().err
    assert "keeps every one of the acquired phase lines" in err and "slice 0" in err
    assert not (tmp_path / "out" / "case.json").exists()


@pytest.mark.parametrize("device,message", [("foo", "PyTorch cannot use it here (Expected one of cpu"),
                                            ("cuda:7", "no CUDA device is available")])
def test_a_device_torch_cannot_use_is_a_usage_error_before_any_work(tmp_path, capsys, device, message):
    """Not one error per slice after the data are read: one line naming the flag, exit 2, nothing written."""
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("checks the message of a machine without CUDA")
    src = _mri(tmp_path / "in" / "case.h5")
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), *FAST, "--device", device])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1
    assert f"--device {device}: {message}" in err and "slice" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("case,message", [
    ("nan_volume", "contains NaN or Inf"),
    ("unit_range", "does not look like HU"),
    ("mu_units", "has units 'mu_per_mm'"),
    ("nan_sinogram", "'sinogram' contains NaN or Inf"),
    ("negative_sinogram", "line integrals -ln(I/I0) are non-negative"),
])
def test_ct_inputs_that_are_not_finite_hu_are_refused(tmp_path, capsys, case, message):
    path = tmp_path / f"{case}.h5"
    if case == "nan_volume":
        hu = np.full((1, 32, 32), -1000.0)
        hu[0, 3, 3] = np.nan
        _ct_volume(path, hu)
    elif case == "unit_range":
        _ct_volume(path, np.random.default_rng(0).random((1, 32, 32)))
    elif case == "mu_units":
        _ct_volume(path, units="mu_per_mm")
    else:
        from recon.data.ct_files import CTGeometry, write_sinogram
        geometry = CTGeometry("parallel", np.linspace(0, np.pi, 10, endpoint=False), 46, 1.0, 1.0, (32, 32))
        sino = np.ones((1, 10, 46), np.float32)
        sino[0, 2, 5] = np.nan if case == "nan_sinogram" else -5.0
        with h5py.File(path, "w") as f:  # written by hand: the writer refuses such data
            write_sinogram(tmp_path / "ok.h5", np.ones((1, 10, 46), np.float32), geometry)
            with h5py.File(tmp_path / "ok.h5") as ok:
                for k, v in ok.attrs.items():
                    f.attrs[k] = v
                f.create_dataset("angles_rad", data=ok["angles_rad"][()])
            f.create_dataset("sinogram", data=sino)
    rc = cli(["reconstruct", str(path), "--out", str(tmp_path / "out"), "--solver", "fbp", "--views", "10", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert not (tmp_path / "out" / f"{case}.json").exists()


# --------------------------------------------------------------------------- reruns
def test_rerun_with_other_settings_recomputes_and_same_name_elsewhere_is_an_error(tmp_path, capsys):
    a = _mri(tmp_path / "a" / "case.h5")
    b = _mri(tmp_path / "b" / "case.h5", n_slices=1)
    out = tmp_path / "out"
    assert cli(["reconstruct", str(a), "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert cli(["reconstruct", str(a), "--out", str(out), *FAST[:-2], "--center-fraction", "0.3"]) == 0
    assert "recompute (the settings or the input changed" in capsys.readouterr().out
    first = _json(out / "case.json")["settings_hash"]
    assert cli(["reconstruct", str(a), "--out", str(out), *FAST, "--accel", "2"]) == 0
    assert _json(out / "case.json")["settings_hash"] != first
    assert cli(["reconstruct", str(a), "--out", str(out), *FAST, "--accel", "2"]) == 0
    capsys.readouterr()
    assert cli(["reconstruct", str(b), "--out", str(out), *FAST, "--accel", "2"]) == 1
    assert "holds the results of another input named case.h5" in capsys.readouterr().err
    assert _json(out / "case.json")["source"]["path"] == str(a.resolve())
    assert cli(["reconstruct", str(a), str(b), "--out", str(tmp_path / "o2"), *FAST]) == 2
    assert "would both write" in capsys.readouterr().err


def test_rerun_skips_only_when_nothing_changed(tmp_path, capsys):
    a = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    args = ["reconstruct", str(a), "--out", str(out), "--solver", "zero-filled", "--accel", "3",
            "--center-fraction", "0.25"]
    assert cli(args) == 0
    capsys.readouterr()
    assert cli(args) == 0
    assert "skip (complete)" in capsys.readouterr().out
    assert cli(args + ["--slices", "0:1"]) == 0
    assert "recompute" in capsys.readouterr().out
    assert _json(out / "case.json")["slices"] == [0]


def test_new_weights_under_the_same_name_redo_the_file(tmp_path, capsys):
    """The prior's sha256 is recorded and is part of the settings: replaced weights do not count as done."""
    a = _mri(tmp_path / "in" / "case.h5", n_slices=1)
    prior = tmp_path / "prior.pt"
    obj = torch.load(WEIGHTS_DIR / "brain-mri-complex.pt", weights_only=True)
    torch.save(obj, prior)
    out = tmp_path / "out"
    args = ["reconstruct", str(a), "--out", str(out), "--solver", "dds", "--nfe", "2", "--samples", "1",
            "--accel", "3", "--center-fraction", "0.25", "--prior", str(prior)]
    assert cli(args) == 0
    rec = _json(out / "case.json")
    assert rec["prior"] == str(prior) and rec["weights"]["prior_sha256"] == _sha(prior)
    assert "unet" not in rec["weights"]  # dds only: new U-Net weights would redo nothing here
    capsys.readouterr()
    assert cli(args) == 0
    assert "skip (complete)" in capsys.readouterr().out
    torch.save({**obj, "meta": {**obj["meta"], "note": "retrained"}}, prior)  # new bytes, same name
    assert cli(args) == 0
    assert "recompute" in capsys.readouterr().out
    assert _json(out / "case.json")["weights"]["prior_sha256"] == _sha(prior)
    # the default prior is named, with the registry's sha256, when no --prior is given
    assert cli(["reconstruct", str(a), "--out", str(tmp_path / "o2"), *args[4:-2]]) == 0
    rec = _json(tmp_path / "o2" / "case.json")
    assert rec["prior"] == "brain-mri-complex"
    assert rec["weights"]["prior_sha256"] == read_registry()["brain-mri-complex"]["sha256"]
    # the U-Net counts only where it is used: in --solver, or as ccdf's start
    ns = argparse.Namespace(prior=None, unet=None)
    assert weights_record(ns, ["l1-wavelet"], {}) == {"mri": {}, "ct": {}}
    rec = weights_record(ns, ["ccdf"], {"ccdf": {"init": "unet"}})["ct"]
    assert rec["prior"] == "head-ct" and rec["unet"] == "unet-head-ct"
    assert rec["unet_sha256"] == read_registry()["unet-head-ct"]["sha256"]


def test_directories_suffixes_and_empty_folders(tmp_path, capsys):
    src = tmp_path / "in"
    _mri(src / "upper.H5")
    _mri(src / "long.hdf5")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), str(tmp_path / "empty"), "--out", str(out), *FAST]) == 0
    assert "no .h5 / .hdf5 files" in capsys.readouterr().err
    assert (out / "upper.json").exists() and (out / "long.json").exists()
    assert cli(["reconstruct", str(tmp_path / "empty"), "--out", str(out), *FAST]) == 2
    assert "no input files" in capsys.readouterr().err


def test_corrupted_kspace_is_flagged(tmp_path, capsys):
    k = _kspace(1)
    target = np.stack([np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(c, axes=(-2, -1)), norm="ortho"),
                                                      axes=(-2, -1))) ** 2).sum(0)) for c in k]).astype(np.float32)
    rng = np.random.default_rng(1)
    raw = k.view(np.uint8).reshape(-1).copy()
    idx = rng.choice(raw.size, raw.size // 20, replace=False)
    raw[idx] = rng.integers(0, 255, idx.size, dtype=np.uint8)
    corrupted = raw.view(np.complex64).reshape(k.shape)
    corrupted[~np.isfinite(corrupted)] = 0
    src = write_fastmri(tmp_path / "in" / "case.h5", corrupted, target=target)
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), *FAST])
    assert rc == 0
    err = capsys.readouterr().err
    assert "disagrees with the file's reconstruction_rss" in err
    assert any("disagrees" in w for w in _json(tmp_path / "out" / "case.json")["warnings"])


# --------------------------------------------------------------------------- messages and early checks
def test_header_errors_name_the_field(tmp_path, capsys):
    good = _mri(tmp_path / "in" / "good.h5")
    files = []
    for name, old, new in [("letters", b"<x>48</x>", b"<x>abc</x>"), ("zero", b"<reconSpace><matrixSize><x>48</x>",
                                                                             b"<reconSpace><matrixSize><x>0</x>")]:
        path = tmp_path / "in" / f"{name}.h5"
        with h5py.File(good) as f, h5py.File(path, "w") as g:
            g.create_dataset("kspace", data=f["kspace"][()])
            xml = f["ismrmrd_header"][()]
            assert old in xml
            g.create_dataset("ismrmrd_header", data=np.bytes_(xml.replace(old, new, 1)))
        files.append(path)
    assert cli(["reconstruct", *map(str, files), "--out", str(tmp_path / "out"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "encoding/encodedSpace/matrixSize/x is 'abc', not a number" in err
    assert "reconSpace/matrixSize is 0 x 48; sizes must be positive" in err


@pytest.mark.parametrize("argv,message", [
    (["--maps", "0"], "--maps must be auto or a positive integer, got 0"),
    (["--maps", "-1"], "--maps must be auto or a positive integer, got -1"),
    (["--maps", "two"], "--maps must be auto or a positive integer, got 'two'"),
    (["--noise-std", "-1"], "--noise-std must be auto or a finite number >= 0"),
    (["--noise-std", "abc"], "--noise-std must be auto or a number >= 0, got 'abc'"),
    (["--center-fraction", "1.5"], "--center-fraction must be in (0, 1)"),
    (["--nfe", "0"], "--nfe must be >= 1"),
    (["--primary", "sense"], "--primary sense is not one of --solver zero-filled"),
    (["--set", "dds.eta=1"], "--set dds.eta: dds is not one of --solver zero-filled"),
    (["--set", "unet.chans=4"], "--set unet.chans: unet is not one of --solver zero-filled"),
    (["--solver", "tv", "--set", "tv.lamda=4"], "--set tv.lamda: tv has no hyper-parameter 'lamda'; valid: "),
    (["--solver", "zero-filled", "--set", "zero-filled.combine=1"], "--set zero-filled.combine: expects"),
    (["--solver", "dds", "--set", "eta=1"], "--set expects METHOD.NAME=VALUE, got 'eta=1'"),
    (["--solver", "dds", "--set", "dds.etta=1"], "--set dds.etta: dds has no hyper-parameter 'etta'; valid: "),
    (["--solver", "dds", "--set", "dds.eta=fast"], "--set dds.eta: expects a finite number (default 1.0), got 'fast'"),
    (["--solver", "dds", "--set", "dds.cg_iters=true"], "--set dds.cg_iters: expects a finite number"),
])
def test_bad_options_exit_2_before_any_work(tmp_path, capsys, argv, message):
    src = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_unwritable_out_is_refused_before_work(tmp_path, capsys):
    src = _mri(tmp_path / "in" / "case.h5")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert cli(["reconstruct", str(src), "--out", str(blocker / "out"), *FAST]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_export_of_a_tiny_ct_slice_is_a_clear_error(tmp_path, capsys):
    hu = np.full((1, 7, 5), -1000.0)
    hu[0, 2:5, 1:4] = 40.0
    src = _ct_volume(tmp_path / "tiny.h5", hu)
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), "--solver", "fbp", "--views", "10",
              "--export", "nifti,dicom", "--quiet"])
    assert rc == 1
    assert "slice 0: image 7 x 5 is too small" in capsys.readouterr().err


def test_noise_std_given_or_unestimable_is_reported_in_file_units(tmp_path, capsys):
    img = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True).astype(np.float32)
    k, _, _ = simulate_multicoil(torch.from_numpy(img[None]), n_coils=4, noise_std=0.0, seed=0)
    src = write_fastmri(tmp_path / "in" / "clean.h5", k.numpy() * 1e3)
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    s = _json(out / "clean.json")
    assert s["noise_std"] == 0.0 and s["noise"][0]["fallback"]
    assert f"warning: {src}: slice 0:" in err and any(w.startswith("slice 0:") for w in s["warnings"])
    assert cli(["reconstruct", str(src), "--out", str(tmp_path / "given"), *FAST, "--noise-std", "0.5"]) == 0
    given = _json(tmp_path / "given" / "clean.json")
    assert given["noise_std"] == pytest.approx(0.5, rel=1e-6) and given["noise"][0].get("method") is None


def test_a_foreign_file_with_an_output_name_is_never_overwritten(tmp_path, capsys):
    raw = _mri(tmp_path / "out" / "case.h5")  # someone's raw file sits where an output would go
    before = _sha(raw)
    src = _mri(tmp_path / "in" / "case.h5", n_slices=1)
    for extra in ([], ["--overwrite"]):
        assert cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), *FAST, *extra]) == 1
        assert "was not written by recon reconstruct" in capsys.readouterr().err
    assert _sha(raw) == before and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case.h5"]


def test_set_reaches_the_sampler_and_unfits_the_interval_calibration(tmp_path):
    src = _mri(tmp_path / "in" / "case.h5", n_slices=1)
    out = tmp_path / "out"
    base = ["--solver", "dds", "--quiet", "--accel", "3", "--center-fraction", "0.25", "--nfe", "3", "--samples", "2"]
    assert cli(["reconstruct", str(src), "--out", str(out), *base, "--set", "dds.eta=0.5",
                "--set", "dds.renoise=posterior"]) == 0
    s = _json(out / "case.json")
    assert s["hparams"]["dds"]["eta"] == 0.5 and s["hparams"]["dds"]["renoise"] == "posterior"
    rec = s["solvers"]["dds"]["interval"]
    assert not rec["calibrated"] and "eta 1.0 there, 0.5 here" in rec["reason"]
    # other hyper-parameters are other settings: the rerun recomputes instead of skipping
    assert cli(["reconstruct", str(src), "--out", str(out), *base, "--set", "dds.eta=0.7"]) == 0
    assert _json(out / "case.json")["hparams"]["dds"]["eta"] == 0.7


def test_set_reaches_a_baseline_over_its_registered_defaults(tmp_path):
    # --set on a baseline overrides that keyword only: the other keywords keep their registered defaults
    src = _mri(tmp_path / "in" / "case.h5")
    out = tmp_path / "out"
    argv = ["reconstruct", str(src), "--out", str(out), *FAST, "--solver", "tv,l1-wavelet", "--set", "tv.lam=0.002",
            "--set", "tv.max_iter=3"]
    assert cli(argv) == 0
    hp = json.loads((out / "case.json").read_text())["hparams"]
    assert hp["tv"]["lam_floor"] == 0.002 and hp["tv"]["max_iter"] == 3
    assert hp["l1-wavelet"]["lam_floor"] == 0.0003 and hp["l1-wavelet"]["max_iter"] == 100
    # a keyword of the CT baseline of the same name is refused where it runs: MRI's tv has no n_iter
    assert cli([*argv[:-2], "--set", "tv.n_iter=3", "--overwrite"]) == 1
    record = json.loads((out / "case.json").read_text())
    assert "tv (mri) has no hyper-parameter 'n_iter'" in record["solvers"]["tv"]["error"]
    assert "psnr" in record["solvers"]["l1-wavelet"]
