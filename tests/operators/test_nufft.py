"""Non-Cartesian MRI: NUFFT operator, trajectories, density compensation, simulation, baselines, coil maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from operators.base import adjointness_error
from operators.dcf import pipe_menon_dcf
from operators.fft import fft2c
from operators.noncartesian_maps import grid_calibration, noncartesian_espirit_maps
from operators.nufft import NonCartesianMRI
from operators.trajectories import GOLDEN_ANGLE, golden_angle_radial, radial, spiral, undersample
from recon.baselines.noncartesian import cg_sense, gridding
from recon.data.simulate.mri import birdcage_maps
from recon.data.simulate.noncartesian import simulate_noncartesian
from tests.conftest import DEVICES, SHARED_DATA, needs_cuda, needs_shared


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _phantom(n: int) -> torch.Tensor:
    return torch.from_numpy(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)).float()


def _cartesian_trajectory(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    ky, kx = torch.meshgrid((torch.arange(h) - h // 2) * (2 * math.pi / h),
                            (torch.arange(w) - w // 2) * (2 * math.pi / w), indexing="ij")
    return torch.stack([ky.reshape(-1), kx.reshape(-1)]).to(dtype)


# -- the operator ----------------------------------------------------------
def test_forward_matches_explicit_dft_off_grid():
    # y_k = sum_n x_n exp(-i k.(n - N//2)) / sqrt(HW) at random off-grid k, evaluated as a dense matrix in
    # float64. torchkbnufft's default kernel (6-point Kaiser-Bessel, 2x grid, linearly interpolated table)
    # is accurate to ~7e-4 relative off the grid (measured for 12x10 up to 64x48 images): require 2e-3.
    g = torch.Generator().manual_seed(0)
    h, w = 12, 10
    traj = (torch.rand(2, 300, generator=g, dtype=torch.float64) * 2 - 1) * math.pi * 0.999
    x = torch.randn(h, w, dtype=torch.complex128, generator=g)
    ny, nx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    phase = traj[0, :, None] * ny.reshape(-1).double() + traj[1, :, None] * nx.reshape(-1).double()
    expected = torch.exp(-1j * phase) @ x.reshape(-1) / math.sqrt(h * w)
    op = NonCartesianMRI(None, traj, image_shape=(h, w), dtype=torch.complex128)
    assert _rel(op(x), expected) < 2e-3


def test_cartesian_grid_trajectory_reproduces_fft2c():
    # on the Cartesian grid the NUFFT is the centred orthonormal FFT (same scaling and centre convention)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 12, dtype=torch.complex64, generator=g)
    op = NonCartesianMRI(None, _cartesian_trajectory(16, 12), image_shape=(16, 12))
    assert _rel(op(x), fft2c(x).reshape(-1)) < 1e-4  # measured 1.2e-5: on-grid points interpolate exactly


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.complex64, 1e-4), (torch.complex128, 1e-10)])
@pytest.mark.parametrize("coils", [4, 0])
def test_adjoint_dot_product(device, dtype, tol, coils):
    # torchkbnufft's forward and adjoint interpolate with the same table, so <Ax, y> = <x, A^H y> up to
    # rounding: measured ~2e-7 at complex64 (sums over ~1e4 products in float32) and ~1e-15 at complex128.
    g = torch.Generator().manual_seed(2)
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    traj = radial(24, 40, dtype=real)
    maps = torch.randn(coils, 20, 14, dtype=dtype, generator=g).to(device) if coils else None
    op = NonCartesianMRI(maps, traj.to(device), image_shape=(20, 14), dtype=dtype)
    assert adjointness_error(op, batch=(2,), dtype=dtype, device=device, generator=g) < tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("coils", [4, 0])
def test_toeplitz_normal_matches_adjoint_of_forward(device, coils):
    # Toeplitz embedding is exact for A^H A up to the NUFFT's own error: measured ~5e-6, required < 1e-3
    g = torch.Generator().manual_seed(3)
    maps = birdcage_maps(coils, (24, 24)).to(device) if coils else None
    op = NonCartesianMRI(maps, spiral(6, 200, n_turns=4).to(device), image_shape=(24, 24))
    x = torch.randn(3, 24, 24, dtype=torch.complex64, generator=g).to(device)
    assert _rel(op.normal(x), op.adjoint(op(x))) < 1e-3


def test_batched_leading_dimensions_match_one_by_one():
    g = torch.Generator().manual_seed(4)
    op = NonCartesianMRI(birdcage_maps(3, (16, 16)), radial(12, 32))
    x = torch.randn(2, 3, 16, 16, dtype=torch.complex64, generator=g)
    y = op(x)
    assert y.shape == (2, 3, 3, 12 * 32)
    assert _rel(y[1, 2], op(x[1, 2])) < 1e-6
    assert op.adjoint(y).shape == (2, 3, 16, 16)
    assert _rel(op.normal(x)[0, 1], op.normal(x[0, 1])) < 1e-6


def test_autograd_gradient_is_the_adjoint_residual():
    # solvers differentiate through the operator: d/dx* of 0.5 ||Ax - y||^2 is A^H (Ax - y), both through
    # the NUFFT and through the Toeplitz normal (0.5 <x, A^H A x> - Re<x, A^H y> has the same gradient)
    g = torch.Generator().manual_seed(8)
    op = NonCartesianMRI(birdcage_maps(3, (16, 16)), radial(16, 32))
    x = torch.randn(16, 16, dtype=torch.complex64, generator=g).requires_grad_()
    y = op(torch.randn(16, 16, dtype=torch.complex64, generator=g))
    (0.5 * (op(x) - y).abs().pow(2).sum()).backward()
    expected = op.adjoint(op(x) - y).detach()
    assert _rel(x.grad, expected) < 1e-5
    x.grad = None
    (0.5 * (x.conj() * op.normal(x)).sum().real - (x.conj() * op.adjoint(y)).sum().real).backward()
    assert _rel(x.grad, expected) < 1e-4                              # Toeplitz vs NUFFT: ~1e-5 apart


def test_to_device_copies_an_equivalent_operator():
    g = torch.Generator().manual_seed(9)
    op = NonCartesianMRI(birdcage_maps(2, (16, 16)), radial(8, 32))
    moved = op.to("cpu")
    x = torch.randn(16, 16, dtype=torch.complex64, generator=g)
    assert moved is not op and torch.equal(moved(x), op(x)) and torch.equal(moved.normal(x), op.normal(x))


@needs_cuda
def test_cuda_matches_cpu():
    # same maths on another device: agreement to float32 rounding of FFTs and interpolation sums
    g = torch.Generator().manual_seed(5)
    op = NonCartesianMRI(birdcage_maps(4, (32, 32)), radial(30, 64))
    x = torch.randn(2, 32, 32, dtype=torch.complex64, generator=g)
    gpu = op.to("cuda")
    assert _rel(gpu(x.cuda()).cpu(), op(x)) < 1e-4
    assert _rel(gpu.normal(x.cuda()).cpu(), op.normal(x)) < 1e-4


def test_bad_inputs_raise_value_errors():
    traj = radial(8, 32)
    with pytest.raises(ValueError, match=r"\[-pi, pi\)"):
        NonCartesianMRI(None, traj * 2, image_shape=(16, 16))
    with pytest.raises(ValueError, match=r"\[-pi, pi\)"):
        NonCartesianMRI(None, torch.full((2, 4), math.pi), image_shape=(16, 16))
    with pytest.raises(ValueError, match=r"\[2, K\]"):
        NonCartesianMRI(None, traj.T, image_shape=(16, 16))
    op = NonCartesianMRI(birdcage_maps(4, (16, 16)), traj)
    with pytest.raises(ValueError, match="does not end with"):
        op(torch.zeros(16, 12, dtype=torch.complex64))          # image does not match the maps
    with pytest.raises(ValueError, match="does not end with"):
        op.adjoint(torch.zeros(4, 8 * 32 - 1, dtype=torch.complex64))  # samples vs trajectory length
    with pytest.raises(ValueError, match="image_shape"):
        NonCartesianMRI(None, traj)
    with pytest.raises(ValueError, match="image_shape"):
        NonCartesianMRI(birdcage_maps(4, (16, 16)), traj, image_shape=(16, 20))


# -- trajectories -------------------------------------------------------------
def test_trajectories_lie_in_range_with_expected_geometry():
    pi32 = float(torch.tensor(math.pi))                                # pi as float32 stores it
    for traj in (radial(402, 512), golden_angle_radial(50, 512), spiral(16, 1000, n_turns=8, alpha=2.0)):
        assert traj.shape[0] == 2 and float(traj.min()) >= -pi32 and float(traj.max()) < pi32
    r = radial(4, 8)
    # spoke 1 of 4 is at 45 degrees; sample 0 is at radius -pi
    assert torch.allclose(r[:, 8], torch.tensor([-math.pi / math.sqrt(2)] * 2), atol=1e-6)
    ga = golden_angle_radial(3, 8).reshape(2, 3, 8)
    angle = torch.atan2(ga[0, :, 0], ga[1, :, 0]) % math.pi        # direction of the first sample
    assert abs(float(angle[1] - angle[0]) % math.pi - GOLDEN_ANGLE) < 1e-5
    s = spiral(2, 100, n_turns=3, alpha=2.0).reshape(2, 2, 100)
    radius = s.norm(dim=0)
    assert torch.all(radius[:, 1:] >= radius[:, :-1])                # centre-out
    assert abs(float(radius[0, 50]) - math.pi * 0.25) < 1e-4           # k_max (t = 1/2)^alpha


def test_undersample_keeps_whole_readouts_of_trajectory_and_samples():
    traj = golden_angle_radial(10, 16)
    kept = undersample(traj, 16, range(4))
    assert torch.equal(kept, traj[:, : 4 * 16])
    r = radial(12, 16)
    assert torch.equal(undersample(r, 16, 4), torch.cat([r[:, 16 * s: 16 * (s + 1)] for s in (0, 3, 6, 9)], 1))
    # undersampling the samples equals simulating on the undersampled trajectory
    g = torch.Generator().manual_seed(6)
    maps = birdcage_maps(2, (16, 16))
    x = torch.randn(16, 16, dtype=torch.complex64, generator=g)
    full, sub = NonCartesianMRI(maps, traj), NonCartesianMRI(maps, kept)
    assert _rel(undersample(full(x), 16, range(4)), sub(x)) < 1e-6
    with pytest.raises(ValueError):
        undersample(traj, 15, 3)


# -- density compensation -------------------------------------------------------
def test_pipe_menon_is_one_on_a_cartesian_grid():
    # a fully sampled Cartesian grid has uniform density: every weight is 1 (normalisation convention)
    w = pipe_menon_dcf(_cartesian_trajectory(24, 20), (24, 20))
    assert float((w - 1).abs().max()) < 1e-3


def test_pipe_menon_follows_the_radial_ramp():
    # a radial sample at radius k covers (2 pi / n_readout) * (pi / n_spokes) * k of k-space, i.e.
    # that area / (2 pi / N)^2 Cartesian cells: the analytic ramp. Measured within 1.1% for radii between
    # 1/8 and 3/4 of k_max (the outermost ring, with no samples beyond it, is 5% high): require 3%.
    n, spokes, ro = 64, 101, 128
    w = pipe_menon_dcf(radial(spokes, ro), (n, n)).reshape(spokes, ro)
    idx = torch.tensor([8, 16, 32, 48])
    k = idx * (2 * math.pi / ro)
    expected = k * (2 * math.pi / ro) * (math.pi / spokes) / (2 * math.pi / n) ** 2
    assert float(((w[:, ro // 2 + idx].mean(0) - expected) / expected).abs().max()) < 0.03


# -- simulation and baselines -----------------------------------------------------
def test_simulation_is_seeded_and_adds_the_requested_noise():
    traj = radial(64, 64)
    img = _phantom(32)
    a = simulate_noncartesian(img, traj, n_coils=4, noise_std=0.1, seed=7)
    b = simulate_noncartesian(img, traj, n_coils=4, noise_std=0.1, seed=7)
    assert torch.equal(a.samples, b.samples)
    noise = a.samples - a.op(a.image)
    # 16384 complex noise samples: the empirical std is within 3% of 0.1 (its own std is ~0.6%)
    assert abs(float(noise.abs().pow(2).mean().sqrt()) - 0.1) < 3e-3
    assert torch.allclose(a.image.abs(), img, atol=1e-6)              # phase only, magnitude untouched


def _fully_sampled_radial(n: int) -> torch.Tensor:
    return radial(math.ceil(math.pi * n / 2), 2 * n)                   # Nyquist at the edge of k-space


def test_cg_sense_and_gridding_on_fully_sampled_radial_phantom():
    # fully sampled radial (pi N / 2 spokes) of a 128x128 phantom, 8 coils, small noise. The k-space
    # corners outside the sampled disk are lost, which alone keeps NRMSE near 3.5% on this phantom
    # (measured: CG 3.8% / 3.6% / 3.5% after 20 / 30 / 50 iterations, gridding 4.2%).
    n = 128
    sim = simulate_noncartesian(_phantom(n), _fully_sampled_radial(n), n_coils=8, noise_std=1e-3, seed=0)
    x = cg_sense(sim.samples, sim.op, n_iter=30)
    assert _rel(x, sim.image) < 0.05
    dcf = pipe_menon_dcf(sim.trajectory, (n, n))
    assert _rel(gridding(sim.samples, sim.op, dcf), sim.image) < 0.06  # no iterations: a little worse


@needs_shared
def test_cg_sense_on_fully_sampled_radial_brainweb_slice():
    from recon.data.brainweb import brainweb_path, normalize_p99, simulate_slice, tissue_fractions
    import nibabel as nib

    z = 90                                                            # 1 mm axial slice, mid-brain
    block = np.rint(np.asarray(nib.load(str(brainweb_path(54, SHARED_DATA))).dataobj[2 * z: 2 * z + 2]))
    img = simulate_slice(tissue_fractions(block.astype(np.uint8), 0), "T1w", np.random.default_rng(0))
    img = torch.from_numpy(normalize_p99(img[None])[0])               # complex64 [217, 181], test subject 54
    sim = simulate_noncartesian(img, _fully_sampled_radial(max(img.shape)), n_coils=8, noise_std=1e-3, seed=1)
    x = cg_sense(sim.samples, sim.op, n_iter=25)                      # measured NRMSE 3.8%
    assert _rel(x, sim.image) < 0.05


def test_cg_sense_validates_its_inputs():
    op = NonCartesianMRI(birdcage_maps(2, (8, 8)), radial(4, 16))
    with pytest.raises(ValueError, match="lam"):
        cg_sense(torch.zeros(2, 64, dtype=torch.complex64), op, lam=-1.0)
    with pytest.raises(ValueError, match="dcf"):
        gridding(torch.zeros(2, 64, dtype=torch.complex64), op, torch.ones(63))


# -- coil maps from non-Cartesian data ------------------------------------------------
def _coherence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel |<a, b>| / (|a| |b|) over coils: 1 when maps agree up to a per-pixel phase."""
    return (a.conj() * b).sum(0).abs() / (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-12)


@pytest.mark.parametrize("kind", ["radial", "spiral"])
def test_grid_calibration_matches_cartesian_centre(kind):
    # the gridded centre equals fft2c of the coil images on the calibration square up to gridding error
    # (measured 4% radial, 7% spiral with the 4-step margin)
    n, c = 64, 20
    traj = radial(48, 2 * n) if kind == "radial" else spiral(12, 600, n_turns=6, alpha=2.0)
    sim = simulate_noncartesian(_phantom(n), traj, n_coils=6, seed=2, toeplitz=False)
    k = grid_calibration(sim.samples, sim.trajectory, (n, n), calib_width=c)
    box = (slice(None), slice(n // 2 - c // 2, n // 2 + c // 2), slice(n // 2 - c // 2, n // 2 + c // 2))
    ref = fft2c(sim.maps * sim.image)
    assert _rel(k[box], ref[box]) < 0.1
    assert float(k.abs().sum()) == pytest.approx(float(k[box].abs().sum()))  # zero outside the square


def test_noncartesian_espirit_recovers_the_coil_maps():
    # ESPIRiT maps are defined up to a per-pixel phase: compare by coherence inside the object
    # (measured mean 0.9999, min 0.999 for radial at 128x128); 0.99 leaves room for ESPIRiT's thresholds
    n = 64
    img = _phantom(n)
    sim = simulate_noncartesian(img, radial(40, 2 * n), n_coils=6, seed=3, toeplitz=False)
    maps = noncartesian_espirit_maps(sim.samples, sim.trajectory, (n, n), calib_width=20)
    assert maps.shape == (6, n, n)
    coh = _coherence(maps, sim.maps)[img > 0.05]
    assert float(coh.mean()) > 0.99 and float(coh.min()) > 0.95
