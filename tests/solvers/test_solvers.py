"""Posterior samplers against a closed-form Gaussian posterior, plus accounting, determinism and bad input.

The noiseless case: a complex 16x16 Gaussian prior diagonal in the Fourier domain and single-coil
masked Fourier measurements. The posterior is known per frequency: measured coefficients equal y,
unmeasured ones keep the prior. The noisy case (the same prior, 4 smooth coils, a random 2D mask and
complex noise, sigma_y = 0.1) is in tests/solvers/test_solvers_noise.py.
Errors are in units of the analytic posterior std; with N = 256 samples the Monte Carlo error of
the mean is about 1/16 of that, the rest is each method's own approximation.
"""
from __future__ import annotations

import math

import pytest
import torch

import solvers
from operators import LinearOperator, MultiCoilMRI, SingleCoilMRI, fft2c, ifft2c
from priors.base import GaussianPrior, PriorInfo, PriorMismatchError
from solvers import SolverError
from tests.solvers.test_solvers_noise import assert_near_posterior, spectrum
from tests.conftest import TEST_DATA

N_PIX = 16
N_SAMPLES = 256


@pytest.fixture(scope="module")
def noiseless_case():
    var = spectrum()
    prior = GaussianPrior(torch.zeros(N_PIX, N_PIX, dtype=torch.complex64), var.float())
    g = torch.Generator().manual_seed(1)
    x0 = prior.sample(1, g)[0]
    mask = (torch.rand(N_PIX, N_PIX, generator=g) < 0.4).float()
    op = SingleCoilMRI(mask)
    mean = ifft2c(fft2c(x0) * mask)                       # measured -> y, unmeasured -> prior mean 0
    std = math.sqrt(float((var * (1 - mask)).sum()) / N_PIX**2)  # per-part std, the same at every pixel
    return op, op(x0), prior, mean, std


# method, hparams, max mean error (posterior-std units), allowed std ratio range. Measured values in comments.
NOISELESS = [
    # exact projection + Langevin corrector: an exact sampler as steps -> inf (measured 0.09, 1.00)
    ("projection", dict(nfe=400), 0.25, (0.95, 1.05)),
    # exact on the measured subspace; 50 DDIM steps on the rest lose some variance (measured 0.08, 0.89;
    # the paper's eta 0.85 with 5 CG steps: 0.09, 0.91)
    ("dds", dict(nfe=50), 0.25, (0.85, 1.0)),
    # starts from the least-squares image at sigma 0.5 < the prior's scale: contracts variance (measured 0.08, 0.84)
    ("ccdf", dict(nfe=20, sigma_start=0.5), 0.25, (0.75, 0.95)),
    # the default start sigma 0.1 (best PSNR on validation data) contracts it much more: the mean stays
    # right, the std is about 0.3 of the posterior's (measured 0.03, 0.30)
    ("ccdf", dict(nfe=20), 0.1, (0.2, 0.4)),
    # dps with the Tweedie-covariance likelihood (sigma_y = 0: the solve is in A J A^H alone): measured 0.08, 1.07;
    # the measured k-space is fitted (relative misfit 1e-7)
    ("dps", dict(nfe=100, likelihood="tweedie"), 0.25, (0.95, 1.15)),
]


@pytest.mark.parametrize("method,hp,max_err,std_range", NOISELESS)
def test_noiseless_gaussian_posterior(noiseless_case, method, hp, max_err, std_range):
    op, y, prior, mean, std = noiseless_case
    post = solvers.sample(method, op, y, prior, n_samples=N_SAMPLES, seed=0, progress=False, scale=1.0, **hp)
    assert_near_posterior(post.samples, mean, std, max_err, std_range)
    # measured k-space is reproduced (noiseless data): relative misfit
    misfit = (op(post.samples) - y).norm() / (y.norm() * math.sqrt(N_SAMPLES))
    assert float(misfit) < 0.02


class _CountingPrior(GaussianPrior):
    """A Gaussian prior that counts calls of `denoise` itself, independently of the `nfe` counter the loop reads."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = 0

    def denoise(self, x, sigma):
        self.calls += 1
        return super().denoise(x, sigma)


# network calls each method must make for budgets 3 and 10: one per step (dds, dps, ccdf without corrector);
# projection: n = (nfe + 1) // 2 predictor steps and n - 1 corrector steps; score_ald: nfe // 3 levels x 3 steps
EXPECTED_CALLS = {"dds": (3, 10), "dps": (3, 10), "ccdf": (3, 10), "projection": (3, 9), "score_ald": (3, 9)}


@pytest.mark.parametrize("method", list(solvers.METHODS))
def test_nfe_accounting_matches_network_calls(noiseless_case, method):
    op, y, base, _, _ = noiseless_case
    prior = _CountingPrior(base.mean, base.var)
    for budget, expected in zip((3, 10), EXPECTED_CALLS[method]):
        prior.calls = 0
        post = solvers.sample(method, op, y, prior, n_samples=2, nfe=budget, progress=False, seed=0)
        assert prior.calls == expected
        assert post.nfe == expected
        assert torch.isfinite(post.mean).all() and torch.isfinite(post.std).all()


@pytest.mark.parametrize("method", list(solvers.METHODS))
def test_zero_noise_range_is_a_value_not_unset(noiseless_case, method):
    # sigma_min = 0.0 (or sigma_max = 0.0) is a request the schedules cannot honour; it must not silently
    # fall back to the prior's range as `sigma_min or default` did
    op, y, prior, _, _ = noiseless_case
    with pytest.raises(SolverError, match="0 < sigma_min < sigma_max"):
        solvers.sample(method, op, y, prior, n_samples=1, nfe=6, progress=False, sigma_min=0.0)
    if method != "ccdf":  # ccdf starts at sigma_start, it has no sigma_max
        with pytest.raises(SolverError, match="0 < sigma_min < sigma_max"):
            solvers.sample(method, op, y, prior, n_samples=1, nfe=6, progress=False, sigma_max=0.0)


@pytest.mark.parametrize("method", list(solvers.METHODS))
def test_seed_reproducibility(noiseless_case, method):
    op, y, prior, _, _ = noiseless_case
    a = solvers.sample(method, op, y, prior, n_samples=2, nfe=6, seed=3, progress=False)
    b = solvers.sample(method, op, y, prior, n_samples=2, nfe=6, seed=3, progress=False)
    c = solvers.sample(method, op, y, prior, n_samples=2, nfe=6, seed=4, progress=False)
    assert torch.equal(a.samples, b.samples)
    assert not torch.allclose(a.samples, c.samples)
    assert not torch.allclose(a.samples[0], a.samples[1])


def test_posterior_fields_and_data_scale(noiseless_case):
    op, y, prior, _, _ = noiseless_case
    post = solvers.sample("dds", op, 10 * y, prior, n_samples=3, nfe=5, progress=False, scale=10.0)
    assert post.samples.shape == (3, N_PIX, N_PIX) and post.mean.shape == (N_PIX, N_PIX)
    assert post.std.shape == (N_PIX, N_PIX) and post.std.dtype == torch.float32 and (post.std >= 0).all()
    # results come back in the data's scale: measured k-space equals the (scaled) measurement
    assert torch.allclose(op(post.samples), (10 * y).expand(3, -1, -1), atol=1e-3 * float((10 * y).abs().max()))
    assert post.hparams["eta"] == 1.0 and post.method == "dds" and post.wall_time >= post.network_time > 0


def test_per_coil_projection_returns_rss_magnitudes():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
    op = MultiCoilMRI(maps, (torch.rand(8, generator=g) > 0.5).float())
    prior = GaussianPrior(torch.zeros(8, 8, dtype=torch.complex64), torch.ones(8, 8))
    y = op(torch.randn(8, 8, dtype=torch.complex64, generator=g))
    post = solvers.sample("projection", op, y, prior, n_samples=2, nfe=5, dc="per-coil", progress=False)
    assert post.mean.shape == (8, 8) and not post.mean.is_complex() and (post.mean >= 0).all()


class _RealMatrix(LinearOperator):
    """A small real operator standing in for a projector (CT-like: real images, real data)."""

    is_complex = False

    def __init__(self, m: torch.Tensor, hw: tuple[int, int]):
        self.m, self.domain_shape, self.range_shape = m, hw, (m.shape[0],)

    def forward(self, x):
        return x.flatten(-2) @ self.m.T

    def adjoint(self, y):
        return (y @ self.m).unflatten(-1, self.domain_shape)


@pytest.mark.parametrize("method", list(solvers.METHODS))
def test_real_valued_operator_and_prior(method):
    # CT-like path: real prior, real operator, projection uses CG with noised measurements
    g = torch.Generator().manual_seed(0)
    op = _RealMatrix(torch.randn(40, 64, generator=g) / 8, (8, 8))
    var = torch.full((8, 8), 0.5)
    prior = GaussianPrior(torch.zeros(8, 8), var, basis="pixel")
    x0 = prior.sample(1, g)[0]
    y = op(x0)
    post = solvers.sample(method, op, y, prior, n_samples=64, nfe=100, seed=0, progress=False, scale=1.0,
                          sigma_y=0.01)
    assert not post.mean.is_complex()
    # the posterior mean explains the data better than the prior mean (zeros) does
    assert float((op(post.mean) - y).norm()) < 0.5 * float(y.norm())


def test_bad_input_is_rejected_before_work(noiseless_case):
    op, y, prior, _, _ = noiseless_case
    with pytest.raises(SolverError, match="does not end with"):
        solvers.sample("dds", op, y[:, :5], prior, progress=False)
    with pytest.raises(SolverError, match="no batch dimension"):
        solvers.sample("dds", op, y[None], prior, progress=False)
    with pytest.raises(SolverError, match="n_samples must be >= 1"):
        solvers.sample("dds", op, y, prior, n_samples=0, progress=False)
    with pytest.raises(SolverError, match="below steps_per_level"):
        solvers.sample("score-ald", op, y, prior, nfe=2, progress=False)
    with pytest.raises(SolverError, match="nfe must be >= 1"):
        solvers.sample("dds", op, y, prior, nfe=0, progress=False)
    with pytest.raises(SolverError, match="unknown method 'foo'"):
        solvers.sample("foo", op, y, prior)
    with pytest.raises(SolverError, match="unknown hyper-parameter"):
        solvers.sample("dds", op, y, prior, snr=0.1)
    real_prior = GaussianPrior(torch.zeros(N_PIX, N_PIX), torch.ones(N_PIX, N_PIX), basis="pixel",
                               info=PriorInfo(name="real-one", value_kind="real"))
    with pytest.raises(PriorMismatchError, match="real-one' is real"):
        solvers.sample("dds", op, y, real_prior, progress=False)


DATA = TEST_DATA
TINY_DEFAULTS = {"dds": {}, "projection": {"nfe": 200}, "score_ald": {"nfe": 300}, "dps": {"nfe": 100}, "ccdf": {}}


@pytest.fixture(scope="module")
def tiny_brain_problem():
    """A 48x48 crop of BrainWeb test subject 51 (shipped in tests/data), 4 birdcage coils, random 1D 4x.

    The prior in tests/data was trained by `priors.training` for 1500 steps on 32x32 BrainWeb train patches.
    """
    import numpy as np

    from operators.fft import ifft2c, rss
    from priors.registry import load
    from recon.data.masks import make_mask
    from recon.data.simulate import simulate_multicoil

    x = torch.from_numpy(np.load(DATA / "brainweb51_crops48.npz")["images"][0])
    _, maps, xc = simulate_multicoil(x, n_coils=4, seed=0)
    op = MultiCoilMRI(maps, make_mask("random", (48, 48), 4, 0.16, seed=0).mask)
    y = op(xc)
    return op, y, load(DATA / "tiny_brain_prior.pt"), xc.abs(), rss(ifft2c(y))


@pytest.mark.parametrize("method", list(solvers.METHODS))
def test_each_method_beats_zero_filled_with_tiny_trained_prior(tiny_brain_problem, method):
    # measured: zero-filled 22.4 dB; dds 28.2, projection 27.6, score_ald 25.4, dps 26.3, ccdf 25.0
    from recon.metrics import psnr

    op, y, prior, ref, zero_filled = tiny_brain_problem
    post = solvers.sample(method, op, y, prior, n_samples=4, seed=0, progress=False, **TINY_DEFAULTS[method])
    assert psnr(ref, post.mean.abs()) > psnr(ref, zero_filled) + 1.0
