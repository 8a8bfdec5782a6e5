"""Classical MRI and CT baselines: exactness where it is known, improvement over zero-filled / FBP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sigpy
import torch

from operators.base import OperatorShapeError
from operators.ct import ParallelBeam2D, sparse_view_angles
from operators.mri import MultiCoilMRI
from recon.baselines.ct_analytic import fbp_reconstruction
from recon.baselines.ct_iterative import (cgls_reconstruction, divergence, gradient, sirt_reconstruction,
                                          tv_reconstruction)
from recon.baselines.mri import cg_sense, l1_wavelet, total_variation, zero_filled
from recon.data.masks import make_mask
from recon.metrics import psnr
from recon.data.simulate.mri import simulate_multicoil


def _phantom(n: int = 64) -> torch.Tensor:
    return torch.from_numpy(np.abs(sigpy.shepp_logan((n, n))).astype(np.float32))


@pytest.fixture(scope="module")
def mri_case():
    """8-coil Shepp-Logan 64x64, noise 0.5 % of the maximum, random 1D mask at 4x (centre 0.08)."""
    k, maps, x = simulate_multicoil(_phantom(), 8, noise_std=0.005, seed=0)
    mask = make_mask("random", (64, 64), 4, 0.08, seed=3).mask
    return k * mask, maps, mask, x


def test_zero_filled_is_exact_on_fully_sampled_kspace():
    # birdcage maps have sum_c |S_c|^2 = 1, so RSS = |x| and the SENSE combination = x (float32 rounding only)
    k, maps, x = simulate_multicoil(_phantom(32), 4, seed=1)
    rss = zero_filled(MultiCoilMRI(maps), k)
    sense = zero_filled(MultiCoilMRI(maps), k, combine="sense")
    assert rss.std is None and rss.method == "zero-filled-rss"
    assert float((rss.mean - x.abs()).abs().max()) < 1e-5
    assert float((sense.mean - x).abs().max()) < 1e-5


def test_zero_filled_rejects_bad_requests(mri_case):
    y, maps, _, _ = mri_case
    A = MultiCoilMRI(maps)
    with pytest.raises(ValueError, match="combine must be one of"):
        zero_filled(A, y, combine="mean")
    with pytest.raises(ValueError, match="needs the operator"):
        zero_filled(None, y, combine="sense")
    with pytest.raises(OperatorShapeError, match="complex k-space"):
        zero_filled(A, y.abs())


def test_cg_sense_without_regularisation_inverts_fully_sampled_data():
    # A^H A = I for a full mask and normalised maps: one CG step solves it exactly
    k, maps, x = simulate_multicoil(_phantom(32), 4, seed=2)
    post = cg_sense(MultiCoilMRI(maps), k, lam=0.0, n_iter=3)
    assert post.hparams == {"lam": 0.0, "lam_floor": 0.0, "noise_std": 0.0, "n_iter": 3}
    assert float((post.mean - x).abs().max()) < 1e-4


@pytest.mark.parametrize("method", ["cg_sense", "l1_wavelet", "total_variation"])
def test_classical_mri_methods_improve_on_zero_filled(mri_case, method):
    y, maps, mask, x = mri_case
    target = x.abs()
    A = MultiCoilMRI(maps, mask)
    base = psnr(target, zero_filled(A, y).mean)  # 16.0 dB measured
    post = {"cg_sense": cg_sense, "l1_wavelet": l1_wavelet, "total_variation": total_variation}[method](A, y)
    # measured: CG-SENSE 17.5 dB, L1-wavelet 19.2 dB, TV 17.7 dB
    assert post.std is None and post.mean.shape == (64, 64) and post.wall_time > 0
    # at least 1 dB: the smallest measured gain (CG-SENSE, 1.5 dB) with margin for BLAS/FFT rounding
    assert psnr(target, post.mean.abs()) > base + 1.0


def test_sigpy_methods_batch_over_leading_dimensions(mri_case):
    y, maps, mask, _ = mri_case
    A = MultiCoilMRI(maps, mask)
    one = l1_wavelet(A, y, max_iter=5).mean
    two = l1_wavelet(A, torch.stack([y, 2 * y]), max_iter=5).mean
    assert two.shape == (2, 64, 64)
    # same problem for slice 0; the solution of 2y with the same lam is close to 2x the solution of y
    assert float((two[0] - one).abs().max()) < 1e-5
    assert float((two[1] - 2 * one).abs().max() / one.abs().max()) < 0.05


def test_sigpy_methods_check_shapes(mri_case):
    y, maps, mask, _ = mri_case
    with pytest.raises(OperatorShapeError, match="maps"):
        total_variation(MultiCoilMRI(maps[:4], mask), y)
    with pytest.raises(OperatorShapeError, match="complex k-space"):
        l1_wavelet(MultiCoilMRI(maps, mask), y.abs())
    with pytest.raises(OperatorShapeError, match="mask"):  # the operator checks the mask against the maps
        MultiCoilMRI(maps, mask[:10])


def test_tv_gradient_and_divergence_are_negative_adjoints():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 9, generator=g, dtype=torch.float64)
    q = torch.randn(2, 2, 7, 9, generator=g, dtype=torch.float64)
    # <grad x, q> = -<x, div q> up to float64 rounding
    assert abs(float((gradient(x) * q).sum() + (x * divergence(q)).sum())) < 1e-12


@pytest.fixture(scope="module")
def ct_case():
    """64x64 Shepp-Logan, 20 parallel views, Gaussian sinogram noise at 1 % of the maximum."""
    img = _phantom()
    op = ParallelBeam2D((64, 64), sparse_view_angles(20), math.ceil(64 * math.sqrt(2)))
    y = op(img)
    y = y + 0.01 * y.max() * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    return img, op, y


@pytest.mark.parametrize("method", ["sirt", "cgls", "tv"])
def test_iterative_ct_methods_improve_on_fbp(ct_case, method):
    img, op, y = ct_case
    base = psnr(img, fbp_reconstruction(op, y).mean)  # 17.5 dB measured
    post = {"sirt": lambda: sirt_reconstruction(op, y, n_iter=100, nonneg=True),   # 21.3 dB measured
            "cgls": lambda: cgls_reconstruction(op, y, n_iter=10),                 # 18.9 dB measured
            "tv": lambda: tv_reconstruction(op, y, lam=0.1, n_iter=200)}[method]()  # 29.4 dB measured
    assert post.std is None and post.mean.shape == (64, 64)
    # 0.5 dB: below the smallest measured gain (CGLS, 1.3 dB), above rounding differences between builds
    assert psnr(img, post.mean) > base + 0.5


def test_tv_without_regularisation_fits_the_data_better_than_with():
    img, op = _phantom(32), ParallelBeam2D((32, 32), sparse_view_angles(12), 46)
    y = op(img)
    free = tv_reconstruction(op, y, lam=0.0, n_iter=150).mean
    strong = tv_reconstruction(op, y, lam=5.0, n_iter=150).mean
    res = lambda x: float(torch.linalg.vector_norm(op(x) - y))  # noqa: E731
    # lam = 0 is non-negative least squares (the phantom fits exactly); a large TV weight must cost data fit
    assert res(free) < 0.05 * float(torch.linalg.vector_norm(y))
    assert res(strong) > 2 * res(free)
    assert float((strong >= 0).float().mean()) == 1.0


# -- the registry: one signature, reachable through run_method ---------------------------------------------
def _tiny_problems():
    """A 32x32 4-coil MRI problem (2x random 1D mask, crop 24x24) and a 32x32 12-view CT problem with Poisson weights."""
    from recon.problems.ct import CTSpec, simulated_ct_problem
    from recon.problems.mri import MRIProblem

    k, maps, _ = simulate_multicoil(_phantom(32), 4, noise_std=0.005, seed=0)
    mask = make_mask("random", (32, 32), 2, 0.1, seed=1).mask.expand(32, 32).float()
    mri = MRIProblem(k * mask, mask, maps, MultiCoilMRI(maps, mask), (24, 24), None, 2.0, True, "random")
    ct = simulated_ct_problem(_phantom(32).numpy() * 1000.0 - 1000.0, 1.0, CTSpec(views=12, I0=1e5))
    return {"mri": mri, "ct": ct}


def _tiny_unet():
    from priors.networks.fastmri_unet import Unet, UnetConfig

    torch.manual_seed(0)
    return Unet.from_config(UnetConfig(chans=2, num_pool_layers=1)).eval()


#: few iterations per baseline, so the reachability test is quick
_QUICK = {"mri": {"sense": {"n_iter": 2}, "l1-wavelet": {"max_iter": 2}, "tv": {"max_iter": 2}},
          "ct": {"sirt": {"n_iter": 2}, "tv": {"n_iter": 2}}}


def test_registered_baselines_are_the_command_line_ones():
    from recon.baselines import baseline_names
    from recon.methods import CT_BASELINES, MRI_BASELINES

    assert set(baseline_names("mri")) == set(MRI_BASELINES)
    assert set(baseline_names("ct")) == set(CT_BASELINES)


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_every_registered_baseline_runs_through_run_method(modality):
    from recon.baselines import baseline_names
    from recon.methods import MethodConfig, run_method

    problem = _tiny_problems()[modality]
    settings = MethodConfig(unet=_tiny_unet(), progress=False, hparams=_QUICK[modality])
    for name in baseline_names(modality):
        post = run_method(name, problem, settings)
        # one estimate each, except the MRI U-Net, whose line-bootstrap replicates give its interval a spread
        spread = name == "unet" and modality == "mri"
        assert (post.std is not None) == spread and post.wall_time > 0, name
        assert post.mean.shape[-2:] == (problem.crop if name == "unet" and modality == "mri" else (32, 32)), name


def test_run_method_keeps_the_registered_defaults_and_the_operands():
    # CT sirt without settings runs 100 non-negative iterations on the Poisson-weighted data; fbp the raw sinogram
    from recon.baselines.ct_analytic import fbp
    from recon.baselines.ct_iterative import sirt
    from recon.methods import MethodConfig, run_method

    ct = _tiny_problems()["ct"]
    got = run_method("sirt", ct, MethodConfig(progress=False)).mean
    assert torch.equal(got, sirt(ct.data_y, ct.data_op, n_iter=100, nonneg=True))
    # given values override the defaults one by one: the registered nonneg=True stays
    got = run_method("sirt", ct, MethodConfig(progress=False, hparams={"sirt": {"n_iter": 3}})).mean
    assert torch.equal(got, sirt(ct.data_y, ct.data_op, n_iter=3, nonneg=True))
    assert not torch.equal(got, sirt(ct.data_y, ct.data_op, n_iter=3))
    assert torch.equal(run_method("fbp", ct, MethodConfig()).mean, fbp(ct.y, ct.op))


@pytest.mark.parametrize("modality,name,message", [
    ("mri", "nope", "solver 'nope' does not apply to MRI data"),
    ("mri", "fbp", "solver 'fbp' does not apply to MRI data"),
    ("ct", "sense", "solver 'sense' does not apply to CT data"),
    ("ct", "unet", "solver 'unet' needs a U-Net baseline (none is loaded)"),
])
def test_unknown_or_unrunnable_baselines_raise_method_errors(modality, name, message):
    from recon.baselines import baseline
    from recon.methods import MethodError, MethodConfig, run_method

    with pytest.raises(MethodError) as err:
        run_method(name, _tiny_problems()[modality], MethodConfig())
    assert str(err.value) == message
    if "does not apply" in message:
        with pytest.raises(MethodError, match="does not apply"):
            baseline(name, modality)


def test_methods_dispatches_baselines_without_a_name_chain():
    import ast
    from pathlib import Path

    import recon.methods
    from recon.methods import CT_BASELINES, MRI_BASELINES

    tree = ast.parse(Path(recon.methods.__file__).read_text())

    def compares_name(node: ast.AST) -> bool:
        return any(isinstance(c, ast.Compare) and isinstance(c.left, ast.Name) and c.left.id == "name"
                   and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in c.ops) for c in ast.walk(node))

    chains = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.If) and compares_name(n.test)
              and len(n.orelse) == 1 and isinstance(n.orelse[0], ast.If) and compares_name(n.orelse[0].test)]
    assert not chains, f"if/elif chain on the method name at lines {chains}"
    baseline_literals = set(MRI_BASELINES + CT_BASELINES)
    named = [c.lineno for c in ast.walk(tree) if isinstance(c, ast.Compare) and isinstance(c.left, ast.Name)
             and c.left.id == "name" and any(isinstance(v, ast.Constant) and v.value in baseline_literals
                                              for v in c.comparators)]
    assert not named, f"baseline names compared in recon/methods.py at lines {named}"


def test_every_registered_baseline_takes_the_operator_and_the_measurement():
    import inspect

    from recon.baselines import BASELINES
    from recon.baselines.registry import SUPPLIED

    assert BASELINES
    for (name, modality), entry in BASELINES.items():
        params = list(inspect.signature(entry.fn).parameters.values())
        assert [p.name for p in params[:2]] == ["A", "y"], (name, modality)
        assert all(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params[:2]), (name, modality)
        keywords = {p.name for p in params[2:]}
        assert set(entry.defaults) <= keywords and set(entry.needs) <= keywords & set(SUPPLIED), (name, modality)


def test_l1_wavelet_weight_follows_the_noise_and_helps_on_noisy_data():
    # noise 4% of the maximum per part, 4x with 5 centre lines: the floor weight (tuned on near-noiseless
    # data) lets the noise and aliasing through; max(lam, L1_NOISE_FACTOR * noise_std) suppresses them
    # (measured 9.3 -> 15.8 dB against the phantom: a hard case for both)
    from recon.baselines.mri import DEFAULT_LAM_L1, L1_NOISE_FACTOR

    x = _phantom()
    k, maps, _ = simulate_multicoil(x, 8, noise_std=0.04, seed=0)
    mask = make_mask("random", (64, 64), 4, 0.08, seed=3).mask
    A, y, sigma = MultiCoilMRI(maps, mask), k * mask, 0.04 * float(x.max())
    blind, aware = l1_wavelet(A, y), l1_wavelet(A, y, noise_std=sigma)
    assert blind.hparams["lam"] == DEFAULT_LAM_L1
    assert aware.hparams["lam"] == pytest.approx(L1_NOISE_FACTOR * sigma)
    assert aware.hparams["lam_floor"] == DEFAULT_LAM_L1
    assert psnr(x, aware.mean.abs()) > psnr(x, blind.mean.abs()) + 3.0


def test_run_method_gives_the_regularised_baselines_the_problems_noise_std():
    from recon.baselines.mri import L1_NOISE_FACTOR, SENSE_NOISE_FACTOR
    from recon.methods import MethodConfig, run_method

    mri = _tiny_problems()["mri"]
    mri.noise_std = 0.05
    post = run_method("l1-wavelet", mri, MethodConfig(progress=False))
    assert post.hparams["noise_std"] == 0.05 and post.hparams["lam"] == pytest.approx(0.05 * L1_NOISE_FACTOR)
    post = run_method("sense", mri, MethodConfig(progress=False))
    assert post.hparams["noise_std"] == 0.05 and post.hparams["lam"] == pytest.approx(0.05 * SENSE_NOISE_FACTOR)


@pytest.mark.parametrize("modality,init", [("mri", "tv"), ("mri", "l1-wavelet"), ("ct", "sirt")])
def test_ccdf_starts_from_a_named_baseline_and_records_its_name(monkeypatch, modality, init):
    # --set ccdf.init=NAME: the sampler receives that baseline's image (as run_method makes it) and the output's
    # hyper-parameters say which baseline it was, not "<tensor>"
    import solvers
    from recon.methods import MethodConfig, run_method
    from solvers.posterior import Posterior

    problem = _tiny_problems()[modality]
    got = {}

    def fake_sample(name, op, y, prior, **kw):
        got.update(kw)
        post = Posterior(mean=kw["init"], std=None)
        post.hparams = {"init": "<tensor>"}
        return post

    monkeypatch.setattr(solvers, "sample", fake_sample)
    settings = MethodConfig(prior=object(), progress=False,  # any prior: the sampler is replaced
                            hparams={"ccdf": {"init": init}, **_QUICK[modality]})
    post = run_method("ccdf", problem, settings)
    assert torch.equal(got["init"], run_method(init, problem, settings).mean)
    assert post.hparams["init"] == init
