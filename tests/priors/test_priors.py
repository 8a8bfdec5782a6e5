"""Prior interface (adapters), our U-Net, the registry and the bundled weights."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from priors.base import (EDMPrior, GaussianPrior, PriorInfo, PriorMismatchError, VEScorePrior, VPEpsilonPrior,
                         linear_beta_alphas_cumprod, standard_noise, to_channels)
from priors.networks.unet import UNet
from tests.conftest import WEIGHTS



# ---------------------------------------------------------------------------
# adapters: the exact Gaussian MMSE denoiser written through each parameterisation
# ---------------------------------------------------------------------------
class _GaussianChannels:
    """Exact MMSE denoiser of independent Gaussian pixels, on channels [B, C, H, W]."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor):
        self.m, self.v = to_channels(mean[None]), var[None, None]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = sigma.reshape(-1, 1, 1, 1) ** 2
        return self.m + self.v / (self.v + s2) * (x - self.m)


class _EDMNet(nn.Module):  # F = (D - c_skip x) / c_out with x = input / c_in, sigma = exp(4 c_noise)
    def __init__(self, d, sd):
        super().__init__()
        self.d, self.sd = d, sd

    def forward(self, y, c_noise):
        s = (4 * c_noise.double()).exp().reshape(-1, 1, 1, 1).to(y.dtype)
        sd = self.sd
        x = y * (s**2 + sd**2).sqrt()
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        return (self.d(x, s.flatten()) - c_skip * x) / c_out


class _VENet(nn.Module):  # score = (D - x) / sigma^2
    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x, sigma):
        return (self.d(x, sigma) - x) / sigma.reshape(-1, 1, 1, 1) ** 2


class _VPNet(nn.Module):  # eps(x_vp, t) = (x_ve - D(x_ve)) / sigma_t with x_ve = x_vp / sqrt(abar_t)
    def __init__(self, d, abar):
        super().__init__()
        self.d, self.abar = d, abar

    def forward(self, x_vp, t):
        a = self.abar[t.long()].float().reshape(-1, 1, 1, 1)
        s = ((1 - a) / a).sqrt()
        x = x_vp / a.sqrt()
        return (x - self.d(x, s.flatten())) / s


def test_ve_vp_edm_adapters_reproduce_the_exact_gaussian_denoiser():
    g = torch.Generator().manual_seed(0)
    mean = standard_noise(torch.empty(16, 16, dtype=torch.complex64), g) * 0.3
    var = torch.rand(16, 16, generator=g) * 0.5 + 0.05
    exact = GaussianPrior(mean, var, basis="pixel")
    d = _GaussianChannels(mean, var)
    info = PriorInfo(name="g", value_kind="complex", sigma_data=0.5)
    abar = linear_beta_alphas_cumprod()
    vp = VPEpsilonPrior(_VPNet(d, abar), info, abar, integer_timesteps=True)
    adapters = {"edm": EDMPrior(_EDMNet(d, 0.5), info), "ve": VEScorePrior(_VENet(d), info), "vp": vp}
    # sigmas exactly on the VP grid so the integer-timestep lookup is exact
    sigmas = [float(vp.sigmas[t]) for t in (20, 200, 600, 999)]
    for s in sigmas:
        x = mean + (var.sqrt() * standard_noise(mean, g)) + s * standard_noise(mean, g)
        ref = exact.denoise(x, s)
        for name, p in adapters.items():
            # relative to the larger of |x| and |ref|: each adapter recovers D from x plus a
            # term of size |x| (cancellation), so float32 round-off scales with |x| (~1e-7 * |x|)
            err = (p.denoise(x, s) - ref).abs().max() / max(ref.abs().max(), x.abs().max())
            assert err < 1e-5, f"{name} at sigma={s:.3g}: relative error {err:.2e}"


def test_vp_adapter_between_grid_steps_uses_the_chosen_steps_sigma():
    # at low noise the DDPM grid is coarse in log sigma (sigma_0 = 0.0100, sigma_1 = 0.0148): a request
    # at sigma = 0.012 picks t = 0 or 1, and the eps net then describes noise at sigma_t, not 0.012.
    # The adapter must equal the exact denoiser at sigma_t (both the input scaling and x - sigma_t eps).
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(8, 8, generator=g, dtype=torch.float32) * 0.2
    var = torch.rand(8, 8, generator=g) * 0.3 + 0.05
    exact = GaussianPrior(mean, var, basis="pixel")
    abar = linear_beta_alphas_cumprod()
    vp = VPEpsilonPrior(_VPNet(_GaussianChannels(mean, var), abar), PriorInfo(name="g", value_kind="real"), abar)
    for s in (0.0115, 0.012, 0.0135, 0.0165):
        t = int(vp.timestep(torch.tensor([s]))[0])
        s_t = float(vp.sigmas[t])
        assert abs(s_t / s - 1) > 0.01  # a real mismatch: off the grid by more than 1 %
        x = mean + var.sqrt() * torch.randn(8, 8, generator=g) + s * torch.randn(8, 8, generator=g)
        got = vp.denoise(x, s)
        ref = exact.denoise(x, s_t)
        # float32 round-off only (cancellation in x - s eps, |x| ~ 1): 1e-5 of max |x|
        assert (got - ref).abs().max() <= 1e-5 * x.abs().max(), f"sigma={s}"


# ---------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------
def test_unet_keeps_any_image_size_and_starts_at_the_skip_connection():
    torch.manual_seed(0)
    net = UNet(in_channels=2, out_channels=2, width=8, mults=(1, 2, 2), res_blocks=1, attention=True)
    prior = EDMPrior(net, PriorInfo(value_kind="complex"))
    for h, w in [(17, 23), (64, 64), (5, 3)]:
        x = torch.randn(2, 2, h, w)
        assert net(x, torch.zeros(2)).shape == (2, 2, h, w)
    # zero-initialised output layer: D(x; s) = c_skip(s) x exactly at initialisation
    x = standard_noise(torch.empty(1, 21, 30, dtype=torch.complex64), torch.Generator().manual_seed(1))
    s = 0.3
    assert torch.allclose(prior.denoise(x, s), x * 0.25 / (s**2 + 0.25), atol=1e-7)


# ---------------------------------------------------------------------------
# registry and prior files
# ---------------------------------------------------------------------------
@pytest.fixture()
def tiny_prior_file(tmp_path) -> Path:
    from priors.training import FORMAT_VERSION

    torch.manual_seed(0)
    net = UNet(in_channels=1, out_channels=1, width=8, mults=(1, 2), res_blocks=1, attention=False)
    info = PriorInfo(name="tiny-real", value_kind="real", modality="ct", normalization="fixed")
    path = tmp_path / "tiny.pt"
    torch.save({"format_version": FORMAT_VERSION, "kind": "edm-unet", "net_config": net.config.to_dict(),
                "info": info.to_dict(), "state_dict": net.state_dict(), "meta": {"steps": 0}}, path)
    return path


@pytest.fixture()
def tiny_prior_and_input(tiny_prior_file):
    """(the tiny prior with seeded random weights added, a seeded real input float32 [3, 16, 16]).

    The untrained net's last layer is zero (output = the skip connection); the added weights make the
    network part of the output non-trivial."""
    from priors.registry import load_file

    prior = load_file(tiny_prior_file)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for w in prior.net.parameters():
            w.add_(0.1 * torch.randn(w.shape, generator=g))
    return prior, torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_unknown_prior_name_lists_the_bundled_ones():
    from priors.registry import UnknownPriorError, available, load

    with pytest.raises(UnknownPriorError) as e:
        load("no-such-prior")
    for name in available():
        assert name in str(e.value)


def test_modified_file_fails_the_sha256_check(tiny_prior_file, tmp_path):
    from priors.checkpoints import CheckpointError
    from priors.registry import load_file, sha256_bytes

    sha = sha256_bytes(tiny_prior_file.read_bytes())
    assert load_file(tiny_prior_file, sha256=sha).info.name == "tiny-real"
    bad = tmp_path / "bad.pt"
    data = bytearray(tiny_prior_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_file(bad, sha256=sha)


def test_config_that_does_not_match_the_weights_is_rejected(tiny_prior_file, tmp_path):
    from priors.checkpoints import CheckpointError
    from priors.registry import load

    obj = torch.load(tiny_prior_file, weights_only=True)
    obj["net_config"]["width"] = 16
    torch.save(obj, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="config"):
        load(tmp_path / "wrong.pt")


def test_complex_image_into_a_real_prior_is_a_clear_error(tiny_prior_file):
    from priors.registry import load

    prior = load(tiny_prior_file)
    with pytest.raises(PriorMismatchError, match="real"):
        prior.denoise(torch.zeros(1, 8, 8, dtype=torch.complex64), 0.1)
    assert prior.denoise(torch.zeros(1, 8, 8), 0.1).shape == (1, 8, 8)


# ---------------------------------------------------------------------------
# bundled weights
# ---------------------------------------------------------------------------
def _bundled() -> list[str]:
    reg = WEIGHTS / "registry.json"
    return sorted(json.loads(reg.read_text())) if reg.exists() else []


@pytest.mark.parametrize("name", ["brain-mri-complex", "head-ct"])
def test_bundled_prior_loads_and_denoises_held_out_crops(name):
    if name not in _bundled():
        pytest.skip(f"{name} is not bundled in this checkout")
    from priors.registry import load, read_registry, sha256_bytes

    entry = read_registry()[name]
    path = WEIGHTS / entry["file"]
    assert path.stat().st_size <= 25 * 2**20
    assert sha256_bytes(path.read_bytes()) == entry["sha256"]
    prior = load(name)
    crops = np.load(WEIGHTS / "heldout_crops.npz")
    x = torch.from_numpy(crops["brain" if prior.info.value_kind == "complex" else "ct"])
    sigma = 0.1
    y = x + sigma * standard_noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = prior.denoise(y, sigma)

    def psnr(a):  # peak = max |clean| per crop
        peak = x.abs().flatten(1).amax(1)
        return (10 * torch.log10(peak**2 / (a - x).abs().pow(2).flatten(1).mean(1))).mean().item()

    # a trained denoiser at sigma = 0.1 must beat the noisy input clearly; 3 dB is far below what
    # the model cards report (>= 8 dB) and far above what an untrained net (c_skip only) gives (~1 dB)
    assert psnr(d) > psnr(y) + 3.0


def test_bundled_file_copied_and_modified_is_rejected(tmp_path):
    names = _bundled()
    if not names:
        pytest.skip("no bundled priors in this checkout")
    from priors.checkpoints import CheckpointError
    from priors.registry import load_file, read_registry

    entry = read_registry()[names[0]]
    copy = tmp_path / entry["file"]
    shutil.copy(WEIGHTS / entry["file"], copy)
    with open(copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_file(copy, sha256=entry["sha256"])


# ---------------------------------------------------------------------------
# inference policy: chunks and bf16
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["brain-mri-complex", "head-ct"])
def test_bf16_denoising_stays_within_0_05_db_of_float32_where_it_is_used(name):
    if name not in _bundled():
        pytest.skip(f"{name} is not bundled in this checkout")
    from priors.base import FULL_BATCH_FP32, default_policy
    from priors.registry import BF16_MIN_SIGMA, load

    prior = load(name)
    assert prior.bf16_min_sigma == BF16_MIN_SIGMA[name]
    crops = np.load(WEIGHTS / "heldout_crops.npz")
    x = torch.from_numpy(crops["brain" if prior.info.value_kind == "complex" else "ct"])
    peak = x.abs().flatten(1).amax(1)

    def psnr(a):
        return (10 * torch.log10(peak**2 / (a - x).abs().pow(2).flatten(1).mean(1))).mean().item()

    grid = [s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0) if s >= prior.bf16_min_sigma]
    assert grid, "the threshold leaves no noise level to check"
    for sigma in grid:
        y = x + sigma * standard_noise(x, torch.Generator().manual_seed(0))
        with torch.no_grad():
            prior.inference = FULL_BATCH_FP32
            ref = prior.denoise(y, sigma)
            prior.inference = default_policy("cpu")  # one image per call, bf16, channels-last
            low = prior.denoise(y, sigma)
        assert not torch.equal(low, ref)  # bf16 really ran
        # the rule the CPU default relies on: 0.05 dB PSNR (worst measured 0.029 dB)
        assert abs(psnr(low) - psnr(ref)) <= 0.05, f"{name} at sigma {sigma}"


def test_below_the_bf16_threshold_the_network_runs_in_float32(tiny_prior_and_input):
    from priors.base import FULL_BATCH_FP32, InferencePolicy

    prior, x = tiny_prior_and_input
    prior.bf16_min_sigma = 0.5
    with torch.no_grad():
        prior.inference = InferencePolicy(chunk=1, bf16=True)
        low_noise, high_noise = prior.denoise(x, 0.1), prior.denoise(x, 1.0)
        prior.inference = InferencePolicy(chunk=1, bf16=False)
        ref_low, ref_high = prior.denoise(x, 0.1), prior.denoise(x, 1.0)
        prior.inference = FULL_BATCH_FP32
        full = prior.denoise(x, 0.1)
    prior.inference = InferencePolicy(chunk=1, bf16=True)
    with torch.enable_grad():                       # gradients through the network (DPS): float32
        assert torch.equal(prior.denoise(x, 1.0).detach(), ref_high)
    assert torch.equal(low_noise, ref_low)          # sigma 0.1 < 0.5: float32, bit for bit
    assert not torch.equal(high_noise, ref_high)    # sigma 1.0 >= 0.5: bf16
    # bf16 keeps ~3 significant digits: relative error of the network part well under 1e-1
    assert float((high_noise - ref_high).abs().max()) < 0.1 * float(ref_high.abs().max())
    # one image per call gives the batch's result up to float32 summation order
    assert torch.allclose(ref_low, full, atol=1e-5)
    assert prior.nfe == 6  # one evaluation per call, however many chunks


def test_cpu_default_is_one_image_per_call_with_bf16_allowed_and_cuda_full_batch():
    from priors.base import default_policy

    cpu, gpu = default_policy("cpu"), default_policy("cuda")
    assert (cpu.chunk, cpu.bf16, cpu.channels_last) == (1, True, True)
    assert (gpu.chunk, gpu.bf16, gpu.channels_last) == (None, False, False)
    # an unchecked prior never runs in bf16 by default
    assert math.isinf(GaussianPrior(torch.zeros(4, 4), torch.ones(4, 4), basis="pixel").bf16_min_sigma)


def test_channels_last_gives_the_same_denoiser_output_as_the_default_memory_format(tiny_prior_and_input):
    """Memory format is layout only: float32 output equal up to rounding, weights converted in place."""
    from priors.base import InferencePolicy

    prior, x = tiny_prior_and_input
    with torch.no_grad():
        prior.inference = InferencePolicy(chunk=1, bf16=False, channels_last=False)
        ref = prior.denoise(x, 0.3)
        prior.inference = InferencePolicy(chunk=1, bf16=False, channels_last=True)
        out = prior.denoise(x, 0.3)
    w = next(p for p in prior.net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(out, x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_score_norm_matches_the_closed_form_of_a_gaussian_prior():
    """Pixel-diagonal Gaussian prior of variance v: D(x, s) = x v / (v + s^2), so |x - D|^2 / (2 s^2) =
    |x|^2 s^2 / (2 (v + s^2)^2), averaged over the object pixels and the levels."""
    from priors.base import GaussianPrior
    from priors.typicality import score_norm

    v = 0.04
    prior = GaussianPrior(torch.zeros(6, 5, dtype=torch.complex64), torch.full((6, 5), v), basis="pixel")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, dtype=torch.complex64, generator=g)
    x[:, 0, 0] = 1e-4                                   # below 0.1 of the maximum: outside the object
    sigmas = (0.02, 0.05, 0.3)
    got = score_norm(prior, x, sigmas)
    mag2 = x.abs() ** 2
    obj = x.abs() >= 0.1 * x.abs().flatten(1).amax(1)[:, None, None]
    expected = sum((mag2 * obj).flatten(1).sum(1) / obj.flatten(1).sum(1) * s**2 / (2 * (v + s**2) ** 2)
                   for s in sigmas) / len(sigmas)
    assert got.shape == (3,) and torch.allclose(got, expected.float(), rtol=1e-4)
    # images the prior describes (small against its variance) score lower than images it does not
    assert (score_norm(prior, 0.1 * x, sigmas) < score_norm(prior, 3 * x, sigmas)).all()
