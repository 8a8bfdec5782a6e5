"""Published-checkpoint compatibility: NCSN++ (score-MRI), ADM (DDS), fastMRI U-Net and VarNet.

Reference data: ../shared/fixtures/checkpoints (key/shape lists of the full-size published configs
and tiny seeded models run through the original code). Tolerances follow its README: float32
outputs may move by up to ~1e-5 with the thread count (oneDNN reduction order), so float32 is
compared at 1e-5 absolute (NCSN++: 1e-4 relative to max|out|, its outputs are divided by small
sigmas); float64 runs agree to ~1e-14 when the algorithm is the same, so 1e-10 is required there.
"""
from __future__ import annotations

import json

import pytest
import torch

from operators.mri import SingleCoilMRI
from priors.base import VEScorePrior, VPEpsilonPrior
from priors.checkpoints import (
    NAMED_CONFIGS, CheckpointError, build_network, infer_named_config, load_checkpoint, load_network,
    resolve_config,
)
from priors.networks.fastmri_unet import Unet, UnetInputError
from priors.networks.ncsnpp import NCSNpp, SplitChannels
from tests.conftest import FIXTURES

FIX = FIXTURES / "checkpoints"
needs_fixtures = pytest.mark.skipif(not FIX.exists(), reason="needs ../shared/fixtures/checkpoints")

F32_ABS = 1e-5   # README: float32 changes by <= 2.6e-6 (ADM), 1.1e-6 (VarNet), 8.6e-7 (U-Net) across threads
F64_ABS = 1e-10  # README: float64 changes by <= 1.4e-14; agreement at 1e-10 proves the same algorithm


def _fixture(name: str) -> dict:
    return torch.load(FIX / name, weights_only=True)


def _key_list(module: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _with_reference_weights(net: torch.nn.Module, d: dict, keys_file: str | None = None) -> torch.nn.Module:
    """`net` with the tiny reference `d`'s ``state_dict`` loaded strictly, in eval mode. With `keys_file`,
    its keys, shapes, dtypes and order must first equal that file's ``state_dict`` list."""
    if keys_file is not None:
        assert _key_list(net) == json.loads((FIX / keys_file).read_text())["state_dict"]
    net.load_state_dict(d["state_dict"], strict=True)
    return net.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------
# full-size configs: keys, shapes, dtypes and order (meta device, no memory)
# ---------------------------------------------------------------------------
FULL_SIZE = [
    ("ncsnpp", "scoremri_fastmri_knee_320", "ncsnpp_fastmri_knee_320.keys.json"),
    ("adm", "dds_fastmri_knee_320_complex", "adm_fastmri_knee_320_complex.keys.json"),
    ("adm", "dds_aapm_256", "adm_aapm_256.keys.json"),
    ("unet", "fastmri_unet_leaderboard", "fastmri_unet_chans256_pools4.keys.json"),
    ("unet", {"in_chans": 1, "out_chans": 1, "chans": 32, "num_pool_layers": 4},
     "fastmri_unet_chans32_pools4.keys.json"),
    ("varnet", "fastmri_varnet_leaderboard", "fastmri_varnet_leaderboard.keys.json"),
]


@needs_fixtures
@pytest.mark.parametrize("family,config,keys_file", FULL_SIZE, ids=[f[2].split(".")[0] for f in FULL_SIZE])
def test_full_size_state_dict_matches_reference_keys_shapes_and_order(family, config, keys_file):
    ref = json.loads((FIX / keys_file).read_text())
    net = build_network(family, config, device="meta")
    ours = _key_list(net)
    assert len(ours) == len(ref["state_dict"])
    assert ours == ref["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == ref["num_parameters_total"]


@needs_fixtures
def test_ncsnpp_trainable_parameter_order_equals_ema_shadow_order():
    ref = json.loads((FIX / "ncsnpp_fastmri_knee_320.keys.json").read_text())
    net = build_network("ncsnpp", "scoremri_fastmri_knee_320", device="meta")
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == ref["ema_shadow_params_order"]
    assert len(trainable) == ref["num_ema_shadow_params"] == 520
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["all_modules.0.W"]


@needs_fixtures
def test_dds_yaml_values_translate_to_the_reference_constructor_values():
    for name, keys_file in [("dds_fastmri_knee_320_complex", "adm_fastmri_knee_320_complex.keys.json"),
                            ("dds_aapm_256", "adm_aapm_256.keys.json")]:
        ref = json.loads((FIX / keys_file).read_text())
        cfg = resolve_config("adm", ref["config_values_used"])
        assert cfg == NAMED_CONFIGS[name].config
        assert list(cfg.attention_ds) == ref["unet_constructor_values"]["attention_resolutions_as_downsample_factors"]


def test_named_config_is_recovered_from_checkpoint_shapes():
    for name, named in NAMED_CONFIGS.items():
        sd = build_network(named.family, name, device="meta").state_dict()
        assert infer_named_config(named.family, sd) == name


# ---------------------------------------------------------------------------
# tiny references: strict loading and outputs
# ---------------------------------------------------------------------------
@needs_fixtures
def test_ncsnpp_tiny_reference_output_is_reproduced():
    d = _fixture("ncsnpp_tiny.pt")
    net = _with_reference_weights(build_network("ncsnpp", d["config"]), d, "ncsnpp_tiny.keys.json")
    with torch.no_grad():
        assert _max_abs(net.noise_embedding(d["labels"]), d["temb"]) < F32_ABS
        out = net(d["x"], d["labels"])
        assert _max_abs(out, d["out"]) < 1e-4 * float(d["out"].abs().max())  # README: 1e-4 relative
        out64 = net.double()(d["x"].double(), d["labels"].double())
    assert _max_abs(out64, d["out_float64"]) < F64_ABS


@needs_fixtures
def test_adm_tiny_reference_output_is_reproduced_for_float_and_integer_steps():
    d = _fixture("adm_tiny.pt")
    net = _with_reference_weights(build_network("adm", d["config"]), d, "adm_tiny.keys.json")
    with torch.no_grad():
        assert _max_abs(net(d["x"], d["t"]), d["out"]) < F32_ABS
        assert _max_abs(net(d["x"], d["t"].long()), d["out"]) < F32_ABS
        out64 = net.double()(d["x"].double(), d["t"].double())
    assert _max_abs(out64, d["out_float64"]) < F64_ABS


@needs_fixtures
def test_fastmri_unet_tiny_reference_output_is_reproduced_including_odd_sizes():
    d = _fixture("fastmri_unet_tiny.pt")
    net = _with_reference_weights(Unet(**d["config"]), d)
    with torch.no_grad():
        assert _max_abs(net(d["x"]), d["out"]) < F32_ABS
        assert _max_abs(net(d["x_odd"]), d["out_odd"]) < F32_ABS  # 30x27: reflect pad after transpose conv
        net64 = net.double()
        assert _max_abs(net64(d["x"].double()), d["out_float64"]) < F64_ABS
        assert _max_abs(net64(d["x_odd"].double()), d["out_odd_float64"]) < F64_ABS


@needs_fixtures
def test_fastmri_varnet_tiny_reference_output_and_sensitivities_are_reproduced():
    d = _fixture("fastmri_varnet_tiny.pt")
    net = _with_reference_weights(build_network("varnet", d["config"]), d)
    k, mask, nlf = d["masked_kspace"], d["mask"], d["num_low_frequencies"]
    with torch.no_grad():
        assert _max_abs(net(k, mask, nlf), d["out"]) < F32_ABS
        assert _max_abs(net(k, mask, None), d["out_num_low_frequencies_None"]) < F32_ABS  # width inferred: 8
        assert _max_abs(net.sens_net(k, mask, nlf), d["sens_maps"]) < F32_ABS
        net64 = net.double()
        assert _max_abs(net64(k.double(), mask, nlf), d["out_float64"]) < F64_ABS
        assert _max_abs(net64.sens_net(k.double(), mask, nlf), d["sens_maps_float64"]) < F64_ABS


# ---------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------
@needs_fixtures
def test_scoresde_container_fixture_loads_ema_weights_and_reproduces_output():
    d = _fixture("ncsnpp_tiny.pt")
    path = FIX / "ncsnpp_tiny_scoresde_container.pth"
    with torch.no_grad():
        ema = load_network(path, "ncsnpp", d["config"])(d["x"], d["labels"])
        raw = load_network(path, "ncsnpp", d["config"], prefer_ema=False)(d["x"], d["labels"])
    assert _max_abs(ema, d["out"]) < 1e-4 * float(d["out"].abs().max())
    # README: the raw (non-EMA) weights carry 0.05 N noise and move the output by up to 14.6
    assert _max_abs(raw, d["out"]) > 1.0


def _tiny_ncsnpp_config() -> dict:
    return {"image_size": 16, "num_channels": 1, "nf": 16, "ch_mult": (1, 2, 2), "num_res_blocks": 1,
            "attn_resolutions": (8,)}


def test_synthetic_scoresde_container_loads_ema_in_registration_order(tmp_path):
    torch.manual_seed(0)
    net = build_network("ncsnpp", _tiny_ncsnpp_config())
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    raw = {f"module.{k}": v + 100.0 for k, v in net.state_dict().items()}  # DataParallel keys
    shadow = [torch.full_like(p, float(i)) for i, p in enumerate(p for p in net.parameters() if p.requires_grad)]
    container = {"model": raw, "ema": {"decay": 0.999, "num_updates": 3, "shadow_params": shadow},
                 "optimizer": {"state": {}, "param_groups": []}, "step": 3}
    path = tmp_path / "checkpoint_3.pth"
    torch.save(container, path)

    loaded = load_network(path, "ncsnpp", _tiny_ncsnpp_config())
    params = dict(loaded.named_parameters())
    # each trainable parameter holds the constant of its EMA index; W comes from the raw model weights
    for i, name in enumerate(trainable):
        assert float((params[name].detach() - i).abs().max()) == 0.0, name
    assert torch.equal(params["all_modules.0.W"], raw["module.all_modules.0.W"])
    assert not params["all_modules.0.W"].requires_grad

    without_ema = dict(load_network(path, "ncsnpp", _tiny_ncsnpp_config(), prefer_ema=False).named_parameters())
    assert torch.equal(without_ema[trainable[5]], raw[f"module.{trainable[5]}"])

    container["ema"]["shadow_params"] = shadow[::-1]  # wrong order: shapes no longer line up
    torch.save(container, path)
    with pytest.raises(CheckpointError, match="registration order"):
        load_network(path, "ncsnpp", _tiny_ncsnpp_config())


def test_checkpoint_with_wrong_keys_reports_them(tmp_path):
    torch.manual_seed(0)
    sd = Unet(1, 1, chans=8, num_pool_layers=2).state_dict()
    sd.pop("conv.layers.0.weight")
    sd["head.weight"] = torch.zeros(3)
    sd["up_conv.1.1.bias"] = torch.zeros(5)
    path = tmp_path / "unet.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "unet", {"in_chans": 1, "out_chans": 1, "chans": 8, "num_pool_layers": 2})
    assert err.value.missing == ["conv.layers.0.weight"]
    assert err.value.unexpected == ["head.weight"]
    assert err.value.mismatched == ["up_conv.1.1.bias (checkpoint (5,) vs network (1,))"]
    assert "conv.layers.0.weight" in str(err.value) and "head.weight" in str(err.value)


def test_unet_rejects_too_small_input_with_a_reason():
    net = Unet(1, 1, chans=4, num_pool_layers=3)
    with pytest.raises(UnetInputError, match="bottleneck would be 1x1"):
        net(torch.zeros(1, 1, 8, 8))
    assert net(torch.zeros(1, 1, 8, 16)).shape == (1, 1, 8, 16)  # 1x2 bottleneck is enough


# ---------------------------------------------------------------------------
# priors
# ---------------------------------------------------------------------------
def test_complex_ncsnpp_prior_runs_real_and_imaginary_parts_separately():
    torch.manual_seed(0)
    net = build_network("ncsnpp", _tiny_ncsnpp_config()).eval()
    assert isinstance(net, NCSNpp)
    g = torch.Generator().manual_seed(1)
    x = torch.complex(torch.randn(2, 16, 16, generator=g), torch.randn(2, 16, 16, generator=g))
    sigma = torch.tensor([0.5, 2.0])
    prior = VEScorePrior(SplitChannels(net, 1), NAMED_CONFIGS["scoremri_fastmri_knee_320"].info)
    with torch.no_grad():
        d = prior.denoise(x, sigma)
        s2 = sigma.reshape(-1, 1, 1) ** 2
        re = x.real + s2 * net(x.real[:, None], sigma)[:, 0]  # Tweedie on each part on its own
        im = x.imag + s2 * net(x.imag[:, None], sigma)[:, 0]
    assert _max_abs(d.real, re) < 1e-5 and _max_abs(d.imag, im) < 1e-5


def _reconstruct(prior, x_true: torch.Tensor, n_steps: int, seed: int
                 ) -> tuple[torch.Tensor, SingleCoilMRI, torch.Tensor]:
    """A few annealed denoise + data-consistency steps (not a full solver)."""
    h, w = x_true.shape[-2:]
    mask = torch.zeros(w)
    mask[::3] = 1
    mask[w // 2 - 2: w // 2 + 2] = 1
    op = SingleCoilMRI(mask, (h, w))
    y = op(x_true)
    g = torch.Generator().manual_seed(seed)
    x = op.adjoint(y)
    sigmas = torch.logspace(0, -2, n_steps)
    with torch.no_grad():
        for s in sigmas:
            noise = torch.complex(torch.randn(h, w, generator=g), torch.randn(h, w, generator=g))
            x = prior.denoise(x + float(s) * noise, float(s))
            x = x + op.adjoint(y - op(x))  # exact projection: A A^H = M for a binary mask
    return x, op, y


def _phantom(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    mag = ((xx**2 + (yy / 0.8) ** 2) < 0.6).float() * 0.8 + 0.1
    return mag * torch.exp(1j * 0.5 * xx)


def test_reconstruction_runs_end_to_end_with_tiny_ncsnpp_prior(tmp_path):
    torch.manual_seed(0)
    net = build_network("ncsnpp", _tiny_ncsnpp_config())
    trainable = [p for p in net.parameters() if p.requires_grad]
    path = tmp_path / "checkpoint_1.pth"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()},
                "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": [p.detach() for p in trainable]},
                "step": 1}, path)
    prior = load_checkpoint(path, "ncsnpp", _tiny_ncsnpp_config())
    assert isinstance(prior, VEScorePrior) and prior.info.value_kind == "complex"
    x_true = _phantom(16)
    x, op, y = _reconstruct(prior, x_true, n_steps=4, seed=0)
    assert prior.nfe == 4
    assert bool(torch.isfinite(x).all())
    assert float((op(x) - y).abs().max()) < 1e-5 * float(y.abs().max())  # measured lines kept exactly
    assert prior.estimate_scale(x_true) == pytest.approx(0.9, rel=1e-6)  # "max" normalisation: max |x|


@needs_fixtures
def test_reconstruction_runs_end_to_end_with_tiny_adm_prior(tmp_path):
    d = _fixture("adm_tiny.pt")
    path = tmp_path / "adm_tiny.pt"
    torch.save(d["state_dict"], path)  # DDS files are plain state dicts
    prior = load_checkpoint(path, "adm", d["config"])
    assert isinstance(prior, VPEpsilonPrior) and prior.info.value_kind == "complex"
    # sigma of DDS step 0 and 999 under the linear beta schedule
    assert prior.info.sigma_min == pytest.approx(0.0100005, rel=1e-4)
    assert float(prior.timestep(torch.tensor([prior.info.sigma_max]))[0]) == 999.0
    x_true = _phantom(32)
    x, op, y = _reconstruct(prior, x_true, n_steps=3, seed=1)
    assert prior.nfe == 3
    assert bool(torch.isfinite(x).all())
    assert float((op(x) - y).abs().max()) < 1e-5 * float(y.abs().max())
