"""Training our priors (`priors.training`), the shared loop (`priors.fit`), the command
(`recon.commands.train_prior`) and the data it reads (`recon.data.pools`, `recon.data.brainweb`,
`recon.data.ct_slices`)."""
from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from priors.fit import FitConfig, StepInfo, StepLog, fit
from priors.training import PriorTrainingConfig, edm_loss, export_prior, run_train_prior
from recon.data.pools import ImagePool, TrainingDataError, build_pool, read_fastmri_targets, sample_patches
from tests.conftest import SHARED, needs_shared



def _fastmri_folder(folder: Path, seed: int = 0) -> Path:
    """Two tiny files in the fastMRI multi-coil layout with `reconstruction_rss` targets (smooth blobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:40j, -1:1:40j]
    for f in range(2):
        imgs = []
        for _ in range(3):
            c = rng.uniform(-0.3, 0.3, size=2)
            r = rng.uniform(0.4, 0.7)
            img = (((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < r**2) * 1.0 + 0.5 * (((yy - c[0]) ** 2 + xx**2) < 0.05)
            imgs.append(img)
        with h5py.File(folder / f"file{f}.h5", "w") as h:
            h.create_dataset("reconstruction_rss", data=np.stack(imgs).astype(np.float32))
            h.create_dataset("kspace", data=np.zeros((3, 2, 40, 40), np.complex64))
            h.attrs["acquisition"] = "AXT1"
    return folder


def _config(folder: Path, out: Path, steps: int, resume: bool = False, **changes) -> PriorTrainingConfig:
    settings = dict(data=f"fastmri:{folder}", out=out, steps=steps, batch=4, patch=16, width=8, mults="1,2",
                    res_blocks=1, no_attention=True, threads=1, log_every=5, warmup=10, lr=2e-3, quiet=True, seed=3,
                    resume=resume)
    return PriorTrainingConfig(**{**settings, **changes})


def _pool(folder: Path) -> ImagePool:
    return build_pool([f"fastmri:{folder}"], folder, seed=3, n_slices=1)


def _eval_loss(prior, pool) -> float:
    x0 = sample_patches(pool, 32, 16, np.random.default_rng(123))
    with torch.no_grad():
        return float(edm_loss(prior, x0, torch.Generator().manual_seed(7), -1.5, 1.5, 0.002, 20.0))


def _prior_from_checkpoint(path: Path, key: str = "net"):
    from priors.base import EDMPrior, PriorInfo
    from priors.networks.unet import UNet

    ck = torch.load(path, weights_only=False)
    net = UNet(**ck["net_config"])
    net.load_state_dict(ck[key])
    return EDMPrior(net, PriorInfo.from_dict(ck["info"])).eval()


def test_tiny_training_run_lowers_the_held_out_loss(tmp_path):
    folder = _fastmri_folder(tmp_path / "fastmri")
    pool = _pool(folder)
    assert pool.complex_valued and len(pool) == 6
    summary = run_train_prior(_config(folder, tmp_path / "run", steps=150), pool)
    assert summary["steps"] == 150
    trained = _prior_from_checkpoint(Path(summary["checkpoint"]))
    untrained = type(trained)(type(trained.net)(**trained.net.config.to_dict()), trained.info)
    before, after = _eval_loss(untrained, pool), _eval_loss(trained, pool)
    # the untrained net is D = c_skip x (zero output layer); 150 steps on piecewise-constant
    # blobs must remove a large part of that error (measured: 1.69 -> 0.86, ratio 0.51; the
    # margin allows for platform-dependent round-off in the seeded run)
    assert after < 0.7 * before, (before, after)
    rows = (tmp_path / "run" / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,wall_s,loss,lr" and len(rows) == 1 + 150 // 5


def test_resume_reproduces_the_continued_run(tmp_path):
    folder = _fastmri_folder(tmp_path / "fastmri")
    pool = _pool(folder)
    run_train_prior(_config(folder, tmp_path / "straight", steps=12), pool)
    run_train_prior(_config(folder, tmp_path / "split", steps=6), pool)
    run_train_prior(_config(folder, tmp_path / "split", steps=12, resume=True), pool)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 12
    # bit-identical: same seeded data stream, noise stream, optimiser state and EMA schedule
    for key in ("net", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"


def test_resume_with_a_different_network_is_refused(tmp_path):
    folder = _fastmri_folder(tmp_path / "fastmri")
    pool = _pool(folder)
    run_train_prior(_config(folder, tmp_path / "run", steps=2), pool)
    with pytest.raises(ValueError, match="config"):
        run_train_prior(_config(folder, tmp_path / "run", steps=4, resume=True, width=16), pool)


def test_fine_tuning_starts_from_the_given_prior_and_refuses_another_network(tmp_path):
    folder = _fastmri_folder(tmp_path / "fastmri")
    pool = _pool(folder)
    run_train_prior(_config(folder, tmp_path / "base", steps=20), pool)
    export_prior(tmp_path / "base" / "checkpoint.pt", tmp_path / "base.pt")
    exported = torch.load(tmp_path / "base.pt", weights_only=False)["state_dict"]
    # learning rate 0 (AdamW's decay is scaled by it too): one step must leave the starting weights in place
    run_train_prior(_config(folder, tmp_path / "tuned", steps=1, lr=0.0, seed=5, init_from=str(tmp_path / "base.pt")),
                    pool)
    tuned = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False)
    fresh = torch.load(tmp_path / "base" / "checkpoint.pt", weights_only=False)
    assert any(not torch.equal(v, exported[k]) for k, v in fresh["net"].items())  # the EMA is not the last net
    for key in ("net", "ema"):
        for k, v in exported.items():
            assert torch.equal(tuned[key][k], v), f"{key}.{k} was not taken from the starting prior"
    # the start is recorded: in the checkpoint, through a resume, and in the exported prior
    base_sha = hashlib.sha256((tmp_path / "base.pt").read_bytes()).hexdigest()
    assert tuned["init"]["sha256"] == base_sha and tuned["init"]["steps"] == 20
    run_train_prior(_config(folder, tmp_path / "tuned", steps=2, lr=0.0, seed=5, resume=True,
                            init_from=str(tmp_path / "base.pt")), pool)
    assert torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False)["init"]["sha256"] == base_sha
    export_prior(tmp_path / "tuned" / "checkpoint.pt", tmp_path / "tuned.pt")
    meta = torch.load(tmp_path / "tuned.pt", weights_only=False)["meta"]
    assert meta["steps"] == 2 and meta["init"]["source"] == str(tmp_path / "base.pt")
    assert meta["init"]["sha256"] == base_sha and "init" not in meta["init"]
    with pytest.raises(ValueError, match="network config .* differs"):
        run_train_prior(_config(folder, tmp_path / "wide", steps=1, width=16, init_from=str(tmp_path / "base.pt")),
                        pool)
    with pytest.raises(ValueError, match="--init-from no-such-prior: .*unknown prior"):
        run_train_prior(_config(folder, tmp_path / "none", steps=1, init_from="no-such-prior"), pool)


def test_fastmri_targets_from_kspace_keep_the_energy(tmp_path):
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(2, 3, 16, 12)) + 1j * rng.normal(size=(2, 3, 16, 12))).astype(np.complex64)
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f.create_dataset("kspace", data=k)
    rss = read_fastmri_targets(tmp_path / "k.h5")
    assert rss.shape == (2, 16, 12)
    # orthonormal FFT (Parseval): sum over pixels of rss^2 = sum over coils and k of |k|^2
    np.testing.assert_allclose((rss**2).sum((1, 2)), (np.abs(k) ** 2).sum((1, 2, 3)), rtol=1e-5)


def test_unknown_data_source_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingDataError, match="unknown data source"):
        build_pool(["imagenet"], tmp_path, seed=0, n_slices=1)
    with pytest.raises(TrainingDataError, match="no \\*.h5"):
        build_pool([f"fastmri:{tmp_path}"], tmp_path, seed=0, n_slices=1)


def test_spin_echo_signal_and_ct_scale_follow_their_formulas():
    from recon.data.brainweb import tissue_signals
    from recon.data.ct_slices import hu_to_prior, prior_to_hu

    s = tissue_signals("T1w")
    assert s[3] == pytest.approx(0.77 * (1 - np.exp(-500 / 500)) * np.exp(-10 / 70), rel=1e-6)  # white matter
    assert s[2] == pytest.approx(0.86 * (1 - np.exp(-500 / 833)) * np.exp(-10 / 83), rel=1e-6)  # grey matter
    assert s[0] == s[7] == 0
    np.testing.assert_allclose(hu_to_prior(np.array([-1024, -1000, 0, 1000])), [0, 0, 1, 2])
    np.testing.assert_allclose(prior_to_hu(hu_to_prior(np.array([-500.0, 40.0, 1500.0]))), [-500, 40, 1500], atol=1e-3)


@needs_shared
def test_brainweb_slices_are_complex_partial_volume_and_p99_normalised():
    from recon.data.brainweb import brainweb_slices, load_brainweb_labels, tissue_fractions

    labels = load_brainweb_labels(51, SHARED / "data")
    frac = tissue_fractions(labels, 90)
    assert frac.shape == (12, 217, 181)
    np.testing.assert_allclose(frac.sum(0), 1.0, atol=1e-6)  # fractions of a partition
    assert set(np.unique(frac)) <= {k / 8 for k in range(9)}  # 2x2x2 block averages
    x = brainweb_slices(51, "T2w", np.random.default_rng(0), n_slices=2, labels=labels)
    assert x.shape == (2, 217, 181) and x.dtype == np.complex64
    np.testing.assert_allclose(np.percentile(np.abs(x).reshape(2, -1), 99, axis=1), 1.0, rtol=1e-5)
    assert np.std(np.angle(x[0][np.abs(x[0]) > 0.3])) > 0.1  # a non-constant phase
    y = brainweb_slices(51, "T2w", np.random.default_rng(0), n_slices=2, labels=labels)
    assert np.array_equal(x, y)  # deterministic by seed


@needs_shared
def test_ct_split_slices_are_in_the_water_scale():
    from recon.data.ct_slices import ct_slices

    x = ct_slices("test", SHARED / "data")
    assert x.shape == (24, 256, 256) and x.min() >= 0
    centre = x[2, 100:140, 110:150]  # brain tissue: 20..45 HU -> 1.02..1.045
    assert 1.0 < np.median(centre) < 1.06


def test_espirit_targets_recover_the_image_up_to_a_global_phase(tmp_path):
    from operators.fft import fft2c
    from recon.data.pools import read_fastmri_espirit

    n, coils = 48, 4
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    obj = ((yy**2 / 0.7 + xx**2 / 0.5) < 0.6).float() * (1 + 0.5 * ((yy - 0.1) ** 2 + xx**2 < 0.05).float())
    x = (obj * torch.exp(1j * (1.5 * xx + 0.5 * yy))).to(torch.complex64)
    centres = [(-1.2, 0.0), (1.2, 0.0), (0.0, -1.2), (0.0, 1.2)]
    maps = torch.stack([torch.exp(-((yy - a) ** 2 + (xx - b) ** 2) / 2.0) * torch.exp(1j * (0.3 * k * xx))
                        for k, (a, b) in enumerate(centres)]).to(torch.complex64)
    maps = maps / (maps.abs() ** 2).sum(0).sqrt()
    k = fft2c(maps * x)
    with h5py.File(tmp_path / "mc.h5", "w") as f:
        f.create_dataset("kspace", data=k[None].numpy())
    est = torch.from_numpy(read_fastmri_espirit(tmp_path / "mc.h5"))[0]
    inside = obj > 0
    # one global phase aligns the ESPIRiT combination with the truth (maps are unique up to it)
    ph = (est[inside] * x[inside].conj()).sum()
    aligned = est * (ph.abs() / ph)
    rel = ((aligned - x)[inside].abs().norm() / x[inside].abs().norm()).item()
    assert rel < 0.02, rel  # measured 0.0016: ESPIRiT of smooth, fully sampled coils is near exact
    with h5py.File(tmp_path / "sc.h5", "w") as f:   # single-coil layout: the coil image is the object
        f.create_dataset("kspace", data=fft2c(x)[None].numpy())
    single = torch.from_numpy(read_fastmri_espirit(tmp_path / "sc.h5"))[0]
    assert torch.allclose(single, x, atol=1e-5)


def test_train_prior_command_builds_the_pool_and_records_the_flags(tmp_path, capsys):
    from recon.cli import main
    from recon.commands.train_prior import add_arguments, config_from_args
    from recon.data.brainweb import SHARED_DATA

    folder = _fastmri_folder(tmp_path / "fastmri")
    argv = ["--data", f"fastmri:{folder}", "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "2",
            "--patch", "16", "--width", "8", "--mults", "1,2", "--res-blocks", "1", "--no-attention", "--quiet",
            "--log-every", "1"]
    config = config_from_args(add_arguments(argparse.ArgumentParser()).parse_args(argv))
    # flags not given take the config's defaults (the two agree)
    assert config == PriorTrainingConfig(data=f"fastmri:{folder}", data_root=SHARED_DATA, out=tmp_path / "run", steps=2,
                                         batch=2, patch=16, width=8, mults="1,2", res_blocks=1, no_attention=True,
                                         quiet=True, log_every=1)
    assert main(["train-prior", *argv]) == 0
    assert "'steps': 2" in capsys.readouterr().out
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    # the checkpoint records exactly the flags (not the dispatcher's own attributes)
    assert ck["args"] == config.record() and ck["step"] == 2
    assert ck["data_description"].startswith(f"fastMRI folder {folder}")


# ---------------------------------------------------------------------------
# the shared loop (priors.fit)
# ---------------------------------------------------------------------------
def _tiny_fit(out: Path, config: FitConfig, validate: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A linear regression trained by `fit`: numpy draws the batch, a torch generator its noise."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    data_rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(2)
    w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def step(info: StepInfo) -> StepLog:
        x = torch.from_numpy(data_rng.standard_normal((8, 4)).astype(np.float32))  # [8, 4]
        y = x @ w_true.T + 0.1 * torch.randn(8, 1, generator=gen)  # [8, 1]
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return StepLog(loss=float(loss.detach()), lr=0.05 / (1 + info.step))  # logged only

    val = (lambda: {"val_mse": float(model.weight.detach().sub(w_true).pow(2).mean())}) if validate else None
    fit(step, model, opt, out, config, rngs={"data_rng": data_rng, "torch_rng": gen}, validate=val,
        validation_columns=("val_mse",) if validate else (), extra_state=lambda: {"kind": "tiny"})
    return model, opt


def _rows(path: Path) -> list[list[str]]:
    """CSV rows without the wall-clock column."""
    return [r[:1] + r[2:] for r in csv.reader(path.open())]


def test_fit_resumes_exactly(tmp_path):
    full, _ = _tiny_fit(tmp_path / "full", FitConfig(steps=6, log_every=1))
    _tiny_fit(tmp_path / "split", FitConfig(steps=3, log_every=1))
    split, _ = _tiny_fit(tmp_path / "split", FitConfig(steps=6, log_every=1, resume=True))
    # same weights, optimiser moments and generator states after 6 steps, and the same log
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6 and a["kind"] == b["kind"] == "tiny"
    assert all(torch.equal(full.state_dict()[k], split.state_dict()[k]) for k in full.state_dict())
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert all(torch.equal(a["opt"]["state"][0][k], b["opt"]["state"][0][k]) for k in a["opt"]["state"][0])
    assert a["data_rng"] == b["data_rng"] and torch.equal(a["torch_rng"], b["torch_rng"])
    assert a["final_loss"] == b["final_loss"]
    rows = _rows(tmp_path / "full" / "loss.csv")
    assert rows == _rows(tmp_path / "split" / "loss.csv")
    assert rows[0] == ["step", "loss", "lr"] and [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_fit_validates_at_checkpoints_and_at_the_end(tmp_path):
    _tiny_fit(tmp_path / "run", FitConfig(steps=4, log_every=2, ckpt_minutes=100, ckpt_every=3), validate=True)
    rows = _rows(tmp_path / "run" / "loss.csv")
    assert rows[0] == ["step", "loss", "lr", "val_mse"]
    # step 2: loss only; step 3: checkpoint -> validated row; step 4: loss; end: validated row without lr
    assert [r[0] for r in rows[1:]] == ["2", "3", "4", "4"]
    assert rows[1][3] == "" and rows[2][3] != "" and rows[3][3] == "" and rows[4][2] == "" and rows[4][3] != ""
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert f"{ck['validation']['val_mse']:.3f}" == rows[4][3]


def test_fit_stops_at_the_time_budget_and_still_checkpoints(tmp_path):
    model, _ = _tiny_fit(tmp_path / "run", FitConfig(steps=5, max_minutes=0.0))
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 0 and all(torch.equal(ck["net"][k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="resume"):
        _tiny_fit(tmp_path / "none", FitConfig(steps=1, resume=True))
