"""U-Net baselines: fastMRI input convention, padding, checkpoint errors, training resume, bundled weights."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from priors.checkpoints import CheckpointError
from priors.networks.fastmri_unet import Unet, UnetInputError
from recon.baselines.unet import (load_unet, mri_unet_image, pad_to_multiple, unet_ct, unet_forward, unet_from_dict,
                                  unet_mri, unpad)
from recon.baselines.unet_training import UNetTrainingConfig, export_unet, fourier_crop, random_masks, run_train_unet
from tests.conftest import ROOT, needs_shared

SHARED = ROOT.parent / "shared"
WEIGHTS = ROOT / "priors" / "weights"


def _net(chans: int = 4, pools: int = 2, seed: int = 0) -> Unet:
    torch.manual_seed(seed)
    return Unet(1, 1, chans=chans, num_pool_layers=pools).eval()


@pytest.mark.parametrize("shape", [(37, 23), (3, 5), (16, 16)])
def test_unet_forward_pads_any_size_and_returns_it(shape):
    net = _net()
    x = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = unet_forward(net, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    padded, pads = pad_to_multiple(x, 4)
    # padded to the next multiple of 2**pools, and cropping gives back the input exactly
    assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
    assert torch.equal(unpad(padded, pads), x)


def test_unet_forward_says_why_it_cannot_take_an_input():
    net = _net()
    with pytest.raises(UnetInputError, match="complex"):
        unet_forward(net, torch.randn(1, 1, 8, 8, dtype=torch.complex64))
    with pytest.raises(UnetInputError, match=r"\[N, C, H, W\]"):
        unet_forward(net, torch.randn(8, 8))


def test_mri_unet_image_maps_the_output_back_with_the_input_mean_and_std():
    # a network whose last 1x1 conv is zero outputs 0 in normalised units -> the image mean everywhere
    net = _net()
    with torch.no_grad():
        net.up_conv[-1][1].weight.zero_()
        net.up_conv[-1][1].bias.fill_(1.0)  # +1 normalised unit -> mean + std
    img = torch.rand(2, 20, 18, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        out = mri_unet_image(net, img)
    expect = img.mean((-2, -1), keepdim=True) + img.std((-2, -1), keepdim=True)
    # float32: mean and std of 360 values agree to ~1e-6 relative
    assert float((out - expect).abs().max()) < 1e-5


def test_checkpoint_with_missing_and_unexpected_keys_names_them():
    sd = _net().state_dict()
    sd.pop("conv.layers.0.weight")
    sd["extra.weight"] = torch.zeros(1)
    obj = {"format_version": 1, "kind": "fastmri-unet", "task": "brain-mri",
           "net_config": {"in_chans": 1, "out_chans": 1, "chans": 4, "num_pool_layers": 2, "drop_prob": 0.0},
           "state_dict": sd, "meta": {}}
    with pytest.raises(CheckpointError) as err:
        unet_from_dict(obj)
    assert err.value.missing == ["conv.layers.0.weight"] and err.value.unexpected == ["extra.weight"]
    assert "conv.layers.0.weight" in str(err.value) and "extra.weight" in str(err.value)


def test_bare_fastmri_state_dict_loads_with_inferred_width_and_depth(tmp_path):
    net = _net(chans=6, pools=3)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "sd.pt")
    loaded = load_unet(tmp_path / "sd.pt")
    assert (loaded.net.chans, loaded.net.num_pool_layers, loaded.task) == (6, 3, "unknown")
    x = torch.randn(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


def test_unet_mri_uses_the_zero_filled_rss_and_crops():
    net = _net()
    k = torch.randn(2, 4, 40, 36, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    post = unet_mri(k, net, crop=(32, 32))
    from operators.fft import ifft2c, rss
    from recon.data.io import center_crop

    with torch.no_grad():
        expect = mri_unet_image(net, center_crop(rss(ifft2c(k)), (32, 32)))
    assert post.std is None and post.mean.shape == (2, 32, 32)
    assert torch.allclose(post.mean, expect, atol=1e-6)


def test_bootstrap_lines_keep_the_centre_and_draw_the_rest_at_the_keep_rate():
    from recon.baselines.unet import bootstrap_lines

    lines = torch.zeros(200, dtype=torch.bool)
    lines[::3] = True
    lines[92:108] = True                                   # a 16-line fully sampled centre
    sampled = lines.expand(10, 200)
    reps = bootstrap_lines(sampled, 400, 0.75, seed=1)
    assert reps.shape == (400, 200)
    assert not reps[:, ~lines].any()                       # never a line that was not acquired
    assert reps[:, 92:108].all()                           # the centre in every replicate
    outer = lines.clone()
    outer[92:108] = False
    rate = float(reps[:, outer].float().mean())            # 60 outer lines x 400 replicates: std of the rate 0.003
    assert abs(rate - 0.75) < 0.015, rate
    assert bootstrap_lines(sampled, 3, 1.0).eq(lines).all()
    with pytest.raises(ValueError, match="keep"):
        bootstrap_lines(sampled, 3, 0.0)


def test_unet_mri_replicates_spread_only_where_lines_are_withheld():
    net = _net()
    mask = torch.zeros(36)
    mask[::2] = 1
    mask[16:20] = 1
    k = torch.randn(4, 40, 36, dtype=torch.complex64, generator=torch.Generator().manual_seed(5)) * mask
    plain = unet_mri(k, net)
    post = unet_mri(k, net, replicates=6, keep=0.5, seed=2)
    # the estimate uses all the data; the replicates only add the spread
    assert torch.allclose(post.mean, plain.mean) and post.samples.shape == (6, 40, 36)
    assert torch.allclose(post.std, post.samples.std(0)) and float(post.std.mean()) > 1e-3
    assert post.nfe == 7 and post.hparams["replicates"] == 6 and post.hparams["keep"] == 0.5
    # every line kept: each replicate is the plain input, so the spread is 0 (float32 round-off)
    full = unet_mri(k, net, replicates=3, keep=1.0)
    assert float(full.std.max()) < 1e-5 and torch.allclose(full.samples[0], plain.mean, atol=1e-5)


def test_data_misfit_is_small_for_the_true_magnitude_and_one_for_an_empty_image(monkeypatch):
    """The U-Net interval's typicality statistic: ``||A x - y|| / ||y||`` of the U-Net's magnitude with a CG-SENSE
    phase. A network that returned the true magnitude fits noiseless fully sampled data up to the phase estimate's
    error; one that returned nothing leaves all of y (1 exactly). Two map sets share the magnitude by their RSS."""
    import recon.baselines.unet as unet_base
    from operators.mri import MultiCoilMRI
    from recon.data.simulate.mri import simulate_multicoil
    from solvers.posterior import Posterior

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = ((xx**2 + yy**2) < 0.6).float() * (1 + 0.5 * xx) * torch.exp(1j * 0.8 * yy)
    k, maps, _ = simulate_multicoil(image.to(torch.complex64), 4, noise_std=0.0, seed=5)
    op = MultiCoilMRI(maps, torch.ones(32))
    net = _net()
    monkeypatch.setattr(unet_base, "unet_mri", lambda kspace, model, **kw: Posterior(mean=image.abs()))
    assert unet_base.data_misfit(k, op, net) < 0.02
    monkeypatch.setattr(unet_base, "unet_mri", lambda kspace, model, **kw: Posterior(mean=torch.zeros(32, 32)))
    assert unet_base.data_misfit(k, op, net) == pytest.approx(1.0, abs=1e-6)
    monkeypatch.setattr(unet_base, "unet_mri", lambda kspace, model, **kw: Posterior(mean=image.abs()))
    two = MultiCoilMRI(torch.stack([maps, 0.5 * maps]), torch.ones(32))
    x = unet_base.unet_mri_init(k, two, net, cg_iter=5)
    assert x.shape == (2, 32, 32) and torch.allclose(x.abs().pow(2).sum(0).sqrt(), image.abs(), atol=1e-5)


def test_unet_mri_init_has_the_unet_magnitude_and_the_cg_sense_phase():
    from operators.linalg import conjugate_gradient
    from operators.mri import MultiCoilMRI
    from recon.baselines.unet import unet_mri_init
    from recon.data.simulate.mri import simulate_multicoil

    k, maps, _ = simulate_multicoil(torch.rand(32, 32, generator=torch.Generator().manual_seed(4)), 4, seed=4)
    op = MultiCoilMRI(maps, torch.ones(32))
    net = _net()
    init = unet_mri_init(k, op, net, cg_iter=5)
    mag = unet_mri(k, net).mean.clamp_min(0)
    phase = torch.angle(conjugate_gradient(op.normal, op.adjoint(k), n_iter=5, dims=2))
    assert init.dtype == torch.complex64 and init.shape == (32, 32)
    # float32 polar/abs round trip
    assert torch.allclose(init.abs(), mag, atol=1e-5)
    keep = mag > 1e-3
    assert float((torch.angle(init[keep] * torch.exp(-1j * phase[keep]))).abs().max()) < 1e-4


def test_fourier_crop_keeps_intensity_and_random_masks_hit_the_acceleration():
    const = np.full((1, 30, 20), 2.0 + 1.0j, dtype=np.complex64)
    # a constant image is a single k-space sample at the centre: cropping keeps it, rescaled to the same value
    assert np.allclose(fourier_crop(const, (12, 10)), 2.0 + 1.0j, atol=1e-5)
    m = random_masks(400, 120, np.random.default_rng(0), ((4.0, 0.08),))
    # fastMRI random masks: expected 1/4 of the lines; mean over 400 masks within 2 %
    assert abs(float(m.mean()) - 0.25) < 0.02


def _tiny_ct_config(tmp_path: Path, out: str, steps: int, resume: bool = False) -> UNetTrainingConfig:
    return UNetTrainingConfig(task="head-ct", out=tmp_path / out, cache=tmp_path / "data.npz", steps=steps, chans=4,
                              pools=2, batch=2, patch=16, ckpt_minutes=100, seed=5, resume=resume)


def _tiny_ct_data(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    target = g.random((3, 24, 24)).astype(np.float32)
    np.savez(tmp_path / "data.npz", fbp=target + 0.1 * g.standard_normal((3, 24, 24)).astype(np.float32),
             target=target, val_fbp=target[:1] + 0.1, val_target=target[:1])


def test_training_resume_continues_the_same_run(tmp_path):
    _tiny_ct_data(tmp_path)
    run_train_unet(_tiny_ct_config(tmp_path, "full", 6))
    run_train_unet(_tiny_ct_config(tmp_path, "split", 3))
    # the learning rate depends on step / steps; steps 0..2 use the full rate in both runs
    summary = run_train_unet(_tiny_ct_config(tmp_path, "split", 6, resume=True))
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["net"]
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["net"]
    assert summary["steps"] == 6
    # same seeded data, noise and optimiser state -> bitwise identical weights
    assert all(torch.equal(full[k], split[k]) for k in full)
    rows = (tmp_path / "split" / "loss.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,wall_s,loss")
    sha = export_unet(tmp_path / "split" / "checkpoint.pt", tmp_path / "w.pt")
    import hashlib

    assert sha == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    loaded = load_unet(tmp_path / "w.pt")
    assert loaded.task == "head-ct" and loaded.meta["steps"] == 6


def test_train_unet_command_passes_the_flags_as_a_config(tmp_path, capsys):
    from recon.cli import main
    from recon.commands.train_unet import add_arguments, config_from_args
    from recon.data.brainweb import SHARED_DATA

    _tiny_ct_data(tmp_path)
    argv = ["--task", "head-ct", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "data.npz"), "--steps", "2",
            "--chans", "4", "--pools", "2", "--batch", "2", "--patch", "16", "--export", str(tmp_path / "w.pt")]
    config = config_from_args(add_arguments(argparse.ArgumentParser()).parse_args(argv))
    # flags not given take the config's defaults (the two agree)
    assert config == UNetTrainingConfig(task="head-ct", out=tmp_path / "run", cache=tmp_path / "data.npz",
                                        data_root=SHARED_DATA, steps=2, chans=4, pools=2, batch=2, patch=16,
                                        export=tmp_path / "w.pt")
    assert main(["train-unet", *argv]) == 0
    assert capsys.readouterr().out.count("'sha256'") == 1  # the summary, once
    rows = (tmp_path / "run" / "loss.csv").read_text().strip().splitlines()
    assert rows[0] == "step,wall_s,loss,lr,val_psnr,val_psnr_input" and rows[-1].split(",")[3] == ""
    assert load_unet(tmp_path / "w.pt").meta["args"] == config.record()
    with pytest.raises(ValueError, match="unknown task"):
        UNetTrainingConfig(task="knee-mri", out=tmp_path)


@needs_shared
@pytest.mark.skipif(not (WEIGHTS / "unet-brain-mri.pt").exists(), reason="bundled unet-brain-mri.pt absent")
def test_bundled_brain_unet_beats_zero_filled_by_4db_on_test_subjects():
    from operators.fft import ifft2c, rss
    from recon.data.brainweb import BRAINWEB_TEST
    from recon.baselines.unet_training import brain_eval_cases, volume_psnr

    model = load_unet("unet-brain-mri")
    cases = brain_eval_cases(BRAINWEB_TEST, 2, 4.0, 0.08, seed=1234)  # 4 subjects x 3 contrasts x 2 slices
    zf = rss(ifft2c(cases["kspace"]))
    out = unet_mri(cases["kspace"], model).mean
    base = volume_psnr(cases["target"], zf, cases["volume"])
    gain = volume_psnr(cases["target"], out, cases["volume"]) - base
    # the acceptance criterion: >= 4 dB (fastMRI PSNR per volume, averaged over the 12 volumes)
    assert gain >= 4.0, f"U-Net gains {gain:.2f} dB over zero-filled ({base:.2f} dB)"


@needs_shared
@pytest.mark.skipif(not (WEIGHTS / "unet-head-ct.pt").exists(), reason="bundled unet-head-ct.pt absent")
def test_bundled_ct_unet_beats_fbp_on_test_slices():
    from recon.data.ct_slices import ct_slices, hu_to_prior
    from recon.metrics import psnr
    from recon.data.simulate.ct import MU_WATER_PER_MM, ct_sinogram
    from recon.baselines.unet_training import CT_PIXEL_MM, ct_geometry

    hu = torch.from_numpy(ct_slices("test", hu=True)[::6])  # 4 of the 24 test slices
    op = ct_geometry()
    unit = MU_WATER_PER_MM * CT_PIXEL_MM
    y = ct_sinogram(hu, op, 1e6, pixel_size_mm=CT_PIXEL_MM, generator=torch.Generator().manual_seed(0))
    target = torch.from_numpy(hu_to_prior(hu.numpy()))
    from recon.baselines.ct_analytic import fbp

    base = psnr(target, fbp(y, op) / unit)
    out = unet_ct(y, op, load_unet("unet-head-ct"), unit=unit).mean / unit
    # measured: FBP 33.6 dB, U-Net 36.4 dB (+2.9 dB) on these slices; 2 dB leaves margin for rounding
    assert psnr(target, out) > base + 2.0


def _disc_images(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 224), torch.linspace(-1, 1, 192), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.5).to(torch.complex64)
    return torch.stack([disc * (1 + 0.5j * k) for k in range(n)])


def test_fastmri_like_pairs_crop_the_oversampled_rss_to_the_recon_size():
    from recon.baselines.unet_training import fastmri_like_pairs

    x = _disc_images(2)
    zf, target = fastmri_like_pairs(x, np.random.default_rng(0), ((4.0, 0.08),), noise_rel=0.0, correlation=0.0)
    assert zf.shape == target.shape == (2, 224, 192) and not zf.is_complex()
    # birdcage maps have sum |S|^2 = 1, so the noiseless RSS target is |x| (oversampling cropped away)
    assert torch.allclose(target, x.abs(), atol=1e-4)
    assert (zf - target).abs().mean() > 0.02   # 4x undersampling leaves aliasing
    noisy = fastmri_like_pairs(x, np.random.default_rng(0), ((4.0, 0.08),), noise_rel=0.02, correlation=0.2)[1]
    background = noisy[:, :20, :20]           # RSS of 16 coils' noise: mean about sqrt(2 * 16) * std ...
    assert 0.5 * 0.02 * 32**0.5 < float(background.mean()) < 1.5 * 0.02 * 32**0.5


def test_fastmri_like_fine_tuning_starts_from_init_and_validates_at_1mm(tmp_path):
    from recon.baselines.unet_training import fastmri_like_pairs

    g = np.random.default_rng(0)
    x = _disc_images(2)
    vzf, vt = fastmri_like_pairs(x, g, ((4.0, 0.08),), 0.01, 0.2)
    small = (g.random((3, 24, 24)) + 0j).astype(np.complex64)
    vk = torch.fft.fft2(torch.from_numpy(small)[:, None].repeat(1, 8, 1, 1)).numpy()
    np.savez(tmp_path / "data.npz", images=small, val_kspace=vk, val_target=np.abs(small).astype(np.float32),
             val_volume=np.zeros(3, dtype=np.int64), fm_images=x.numpy(), fm_val_zf=vzf.numpy(),
             fm_val_target=vt.numpy(), fm_val_volume=np.zeros(2, dtype=np.int64))
    torch.save(_net().state_dict(), tmp_path / "init.pt")   # a bare fastMRI state dict
    cfg = UNetTrainingConfig(task="brain-mri", out=tmp_path / "run", cache=tmp_path / "data.npz", steps=2, chans=4,
                             pools=2, batch=1, lr=0.0, ckpt_minutes=100, fastmri_like=1.0, init=tmp_path / "init.pt")
    summary = run_train_unet(cfg)
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["net"]
    assert all(torch.equal(trained[k], v) for k, v in _net().state_dict().items())   # lr 0 keeps the init
    assert set(summary["validation"]) >= {"val_psnr_1mm", "val_psnr_1mm_input"}
    header = (tmp_path / "run" / "loss.csv").read_text().splitlines()[0]
    assert header.endswith("val_psnr,val_psnr_input,val_psnr_1mm,val_psnr_1mm_input")
    np.savez(tmp_path / "old.npz", images=small, val_kspace=vk, val_target=np.abs(small).astype(np.float32),
             val_volume=np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="without the fastMRI-like data"):
        run_train_unet(UNetTrainingConfig(task="brain-mri", out=tmp_path / "r2", cache=tmp_path / "old.npz",
                                          fastmri_like=0.5))
    with pytest.raises(ValueError, match="fastmri_like"):
        UNetTrainingConfig(task="head-ct", out=tmp_path, fastmri_like=0.5)
