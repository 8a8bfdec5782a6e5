"""`recon reconstruct` end to end: outputs, metrics, modality detection, torchrun sharding, bad input."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize, rotate

from operators.fft import fft2c
from priors.base import GaussianPrior
from recon.cli import main as cli
from recon.data.io import write_fastmri
from recon.methods import MethodConfig
from recon.pipeline.run import reconstruct_file
from recon.pipeline.volume import ReconstructConfig
from recon.problems.mri import MaskSpec
from recon.data.simulate import simulate_multicoil
from tests.conftest import FASTMRI_REAL, TEST_DATA, needs_shared, write_bad_fastmri, write_h5

N = 64


def _phantom(angle: float) -> np.ndarray:
    return rotate(resize(shepp_logan_phantom(), (N, N), anti_aliasing=True), angle, mode="constant").astype(np.float32)


@pytest.fixture(scope="module")
def mri_file(tmp_path_factory) -> Path:
    imgs = torch.from_numpy(np.stack([_phantom(10), _phantom(-15)]))
    k, _, _ = simulate_multicoil(imgs, n_coils=4, noise_std=0.001, seed=0)
    return write_fastmri(tmp_path_factory.mktemp("mri") / "phantom.h5", k)


def _gaussian_prior() -> GaussianPrior:
    """A stationary Gaussian prior: the power spectrum of phantoms at other angles (p99-normalised)."""
    x = torch.from_numpy(np.stack([_phantom(a) for a in range(0, 180, 20)])).to(torch.complex64)
    x = x / torch.quantile(x.abs().flatten(), 0.99)
    var = (fft2c(x).abs() ** 2 / 2).mean(0).float() + 1e-4
    return GaussianPrior(torch.zeros(N, N, dtype=torch.complex64), var)


def test_end_to_end_mri_outputs_and_quality(mri_file, tmp_path):
    cfg = ReconstructConfig(solvers=["dds"], mask=MaskSpec("random", 3, 0.2, 0),
                            quiet=True, export=("nifti", "dicom"), save_samples=True, prior_name="gaussian")
    settings = MethodConfig(prior=_gaussian_prior(), n_samples=4, nfe=20, progress=False)
    summary = reconstruct_file(mri_file, cfg, lambda modality: settings, tmp_path)
    name = mri_file.stem
    with h5py.File(tmp_path / f"{name}.h5") as f:
        for d in ("mean", "std", "samples", "zero_filled", "reference", "mask", "solvers/dds/mean"):
            assert d in f, d
        assert f["mean"].shape == (2, N, N) and f["samples"].shape == (2, 4, N, N)
        std = f["std"][()]
        assert np.isfinite(std).all() and (std >= 0).all() and std.mean() > 0
        assert f.attrs["solver"] == "dds" and f.attrs["nfe"] == 20 and f.attrs["mask_kind"] == "random"
    s = json.loads((tmp_path / f"{name}.json").read_text())
    assert s["solvers"]["dds"]["psnr"] > s["solvers"]["zero-filled"]["psnr"]
    assert s == json.loads(json.dumps(summary))
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert (tmp_path / f"{name}_mean.nii.gz").exists() and len(list((tmp_path / f"{name}_std_dicom").glob("*.dcm"))) == 2
    import pydicom
    ds = pydicom.dcmread(next((tmp_path / f"{name}_mean_dicom").glob("0000.dcm")))
    assert ds.Rows == N and ds.Modality == "MR"


def test_magnitude_rules_rss_adds_the_coils_noise_floor_image_does_not(tmp_path):
    # fastMRI's target is the RSS of the noisy coil images: where there is no signal its level is the chi
    # mean of the coils' noise (noise_floor), which the "rss" rule predicts and |x| ("image") does not
    imgs = torch.from_numpy(_phantom(10)[None])
    k, _, _ = simulate_multicoil(imgs, n_coils=4, noise_std=0.02, seed=0)
    src = write_fastmri(tmp_path / "noisy.h5", k)
    sigma = 0.02 * float(imgs.abs().max())   # per real/imaginary part, in the file's units
    out = {}
    for rule in ("rss", "image"):
        cfg = ReconstructConfig(solvers=["sense", "zero-filled"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True,
                                noise_std=sigma, magnitude=rule)
        s = reconstruct_file(src, cfg, lambda m: MethodConfig(progress=False), tmp_path / rule)
        with h5py.File(tmp_path / rule / "noisy.h5") as f:
            out[rule] = (s, f["solvers/sense/mean"][()], f["reference"][()], f["zero_filled"][()])
    (s_rss, rss, ref, zf_rss), (s_img, img, _, zf_img) = out["rss"], out["image"]
    floor = sigma * np.sqrt(2) * np.exp(math.lgamma(4.5) - math.lgamma(4))
    assert s_rss["magnitude"] == {"rule": "rss", "noise_floor": pytest.approx(floor)}
    assert s_img["magnitude"] == {"rule": "image", "noise_floor": 0.0}
    np.testing.assert_allclose(rss, np.sqrt(img.astype(np.float64) ** 2 + floor**2), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(zf_rss, zf_img)    # real-valued outputs (RSS, U-Net) are left as they are
    background = (imgs[0] == 0).numpy()[None]
    assert abs(ref[background].mean() - floor) < 0.03 * floor   # the reference does sit on the floor
    # measured 26.56 vs 25.27 dB (CG-SENSE with its noise-aware weight)
    assert s_rss["solvers"]["sense"]["psnr"] > s_img["solvers"]["sense"]["psnr"] + 0.25


def test_a_single_coil_file_is_reconstructed_with_a_uniform_map(tmp_path, capsys):
    """fastMRI's single-coil layout (kspace [slices, H, W], target `reconstruction_esc`): one coil, map 1 on the
    whole grid; the zero-filled image is |IFFT| of the masked k-space, scored against the file's target."""
    from operators.fft import ifft2c
    from skimage.metrics import peak_signal_noise_ratio

    imgs = torch.from_numpy(np.stack([_phantom(10), _phantom(-15)])).to(torch.complex64)
    g = torch.Generator().manual_seed(0)
    k = fft2c(imgs) + 0.002 * torch.complex(torch.randn(imgs.shape, generator=g), torch.randn(imgs.shape, generator=g))
    src = write_fastmri(tmp_path / "esc.h5", k.numpy(), target=imgs.abs().numpy())
    with h5py.File(src) as f:
        assert "reconstruction_esc" in f and f["kspace"].ndim == 3
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), "--solver", "tv,zero-filled", "--accel", "3",
              "--center-fraction", "0.2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "out" / "esc.json").read_text())
    assert s["calibration"]["method"] == "single-coil" and s["coils"] == 1
    with h5py.File(tmp_path / "out" / "esc.h5") as f:
        mask = f["mask"][()]
        zf = f["solvers/zero-filled/mean"][()]
    ours = ifft2c(k * torch.from_numpy(mask)).abs().numpy()
    np.testing.assert_allclose(zf, ours, rtol=1e-4, atol=1e-6)
    target = imgs.abs().numpy()
    assert s["solvers"]["zero-filled"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(target, ours, data_range=target.max()), abs=0.01)
    assert s["solvers"]["tv"]["psnr"] > s["solvers"]["zero-filled"]["psnr"] + 1.0
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "two"), "--solver", "zero-filled", "--maps", "2",
              "--quiet"])
    assert rc != 0 and "--maps 2 needs several coils" in capsys.readouterr().err


def test_a_knee_layout_file_padded_phase_oversampled_readout_and_a_narrower_recon_grid(tmp_path, capsys):
    """fastMRI's knee layout, scaled down: readout oversampled 2x, zero-padded phase edges (knee: 368 encoded
    lines, [12, 356) acquired) and a recon grid narrower than the encoded one (knee: 320 x 320). Here 128 x 80
    k-space, lines [8, 72) acquired, recon 64 x 64. The mask samples acquired lines only, the acceleration counts
    them, every output is on the recon grid, and the zero-filled image is fastMRI's: RSS of the masked coil
    images, centre-cropped (computed here from the raw oversampled k-space)."""
    from operators.fft import ifft2c, rss
    from recon.data.io import center_crop

    image = np.zeros((64, 80), np.float32)
    image[:, 8:72] = _phantom(20)                                        # the object fills the acquired FOV
    oversampled = np.zeros((128, 80), np.float32)
    oversampled[32:96] = image                                           # readout FOV twice the recon FOV
    k, _, _ = simulate_multicoil(torch.from_numpy(oversampled)[None], n_coils=6, noise_std=0.002, seed=1)
    k[..., :8] = 0
    k[..., 72:] = 0
    src = write_fastmri(tmp_path / "knee.h5", k, recon_size=(64, 64), acquired=(8, 72))
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), "--solver", "sense,zero-filled",
              "--mask", "equispaced", "--accel", "4", "--center-fraction", "0.2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "out" / "knee.json").read_text())
    with h5py.File(tmp_path / "out" / "knee.h5") as f:
        mask, zf = f["mask"][()], f["solvers/zero-filled/mean"][()]
        assert f["solvers/sense/mean"].shape == f["reference"].shape == zf.shape == (1, 64, 64)
    lines = mask[0, 0] > 0                                               # [80]: the mask's phase lines
    assert mask.shape == (1, 64, 80) and not lines[:8].any() and not lines[72:].any()
    assert s["acceleration"] == pytest.approx(64 / lines.sum(), rel=1e-3) and 3.2 < s["acceleration"] < 4.8
    ours = center_crop(rss(ifft2c(k[0] * torch.from_numpy(lines.astype(np.float32)))), (64, 64)).numpy()
    np.testing.assert_allclose(zf[0], ours, rtol=1e-4, atol=1e-5 * ours.max())
    assert s["solvers"]["sense"]["psnr"] > s["solvers"]["zero-filled"]["psnr"] + 3.0


@needs_shared
def test_real_fastmri_file_with_two_map_sets(tmp_path):
    # the real reduced-FOV file: two ESPIRiT sets, retrospective 4x equispaced, the small test prior
    from priors.registry import load
    prior = load(TEST_DATA / "tiny_brain_prior.pt")
    # 24 ACS lines (0.143 of the 168 acquired): with fastMRI's 0.08 only 13 lines calibrate the maps
    cfg = ReconstructConfig(solvers=["dds"], mask=MaskSpec("equispaced", 4, 0.143, 0, "acquired"), n_maps=2, quiet=True)
    s = reconstruct_file(FASTMRI_REAL, cfg, lambda m: MethodConfig(prior=prior, n_samples=2, nfe=10,
                                                                       progress=False), tmp_path)
    assert s["solvers"]["dds"]["psnr"] > s["solvers"]["zero-filled"]["psnr"]
    assert s["acceleration"] == pytest.approx(4, rel=0.1)


def _ct_volume(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    hu = np.where(xx**2 + yy**2 < 0.6, 40.0, -1000.0) + np.where((xx - 0.2) ** 2 + yy**2 < 0.05, 900.0, 0)
    hu = hu + rng.normal(0, 5, hu.shape)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("volume", data=hu[None].astype(np.int16))
        d.attrs["spacing_mm_xyz"] = (1.0, 1.0, 1.0)
    return path


def test_ct_volume_with_cli(tmp_path, capsys):
    src = _ct_volume(tmp_path / "head.h5", 0)
    rc = cli(["reconstruct", str(src), "--out", str(tmp_path / "out"), "--solver", "fbp,sirt", "--views", "20",
              "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "out" / "head.json").read_text())
    assert s["modality"] == "ct" and s["units"] == "HU" and s["views"] == 20
    assert s["solvers"]["sirt"]["psnr"] > 20
    with h5py.File(tmp_path / "out" / "head.h5") as f:
        assert f["fbp"].shape == (1, 32, 32) and f["sinogram"].shape[:2] == (1, 20)


def test_torchrun_two_ranks_shard_files_and_rerun_skips(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed next to the interpreter")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        _ct_volume(src / f"case{i}.h5", i)
    out = tmp_path / "out"
    cmd = [torchrun, "--nproc_per_node=2", "--master_port", str(29500 + os.getpid() % 1000), "-m", "recon.cli",
           "reconstruct", str(src), "--out", str(out), "--solver", "fbp", "--views", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    done = [line for line in first.stdout.splitlines() if line.startswith(str(src))]
    assert sorted(Path(line.split(":")[0]).name for line in done) == [f"case{i}.h5" for i in range(4)]
    assert sorted(p.name for p in out.glob("*.json")) == [f"case{i}.json" for i in range(4)]
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0
    assert second.stdout.count("skip (complete)") == 4


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("not_hdf5", "not an HDF5 file"),
    ("no_kspace", "no 'kspace' dataset"),
    ("nan", "NaN or Inf"),
])
def test_bad_inputs_one_line_nonzero_exit_nothing_written(tmp_path, capsys, mri_file, case, message):
    bad = tmp_path / f"{case}.h5"
    if case == "nan":
        with h5py.File(mri_file) as f:
            k = f["kspace"][()]
        k[:, 0, 3, 3] = np.nan  # every slice: nothing to write (one bad slice alone is test_reliability's case)
        write_h5(bad, kspace=k)
    else:
        write_bad_fastmri(bad, case)
    out = tmp_path / "out"
    rc = cli(["reconstruct", str(bad), str(mri_file), "--out", str(out), "--solver", "zero-filled", "--quiet",
              "--accel", "3", "--center-fraction", "0.2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and str(bad) in err[0] and message in err[0]
    assert not list(out.glob(f"{case}*")) and not list(out.glob(".*"))
    assert (out / f"{mri_file.stem}.json").exists()  # the good file is still processed


@pytest.mark.parametrize("argv,message", [
    (["--solver", "magic"], "unknown solver 'magic'"),
    (["--accel", "1"], "--accel must be > 1"),
    (["--solver", "dds", "--prior", "head-ct"], "MRI data need a complex-valued prior"),
])
def test_bad_settings_exit_2_before_work(tmp_path, capsys, mri_file, argv, message):
    rc = cli(["reconstruct", str(mri_file), "--out", str(tmp_path / "o"), "--quiet", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_demo_runs_on_the_bundled_sample(tmp_path, capsys):
    # --fast: one slice, 2 samples, 5 NFE; the full demo is what `make demo` runs
    rc = cli(["demo", "--out", str(tmp_path), "--fast", "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "brainweb_subject51_t1w.json").read_text())
    assert set(s["solvers"]) == {"zero-filled", "dds", "unet", "l1-wavelet"}
    assert all(np.isfinite(v["psnr"]) for v in s["solvers"].values())
    assert np.isfinite(s["solvers"]["dds"]["mean_std"]) and s["solvers"]["dds"]["nfe"] == 5
    assert "demo finished" in capsys.readouterr().out
