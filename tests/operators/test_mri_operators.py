"""Cartesian MRI operators, CG and FFT helpers."""
from __future__ import annotations

import pytest
import torch

from operators import (MultiCoilMRI, OperatorShapeError, SingleCoilMRI, adjointness_error, conjugate_gradient,
                       fft2c, ifft2c, power_iteration, rss, sense_combine)
from tests.conftest import DEVICES


def _maps(n_sets, c, h, w, dtype, g):
    shape = (c, h, w) if n_sets == 1 else (n_sets, c, h, w)
    return torch.randn(shape, dtype=dtype, generator=g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_sets", [1, 2])
@pytest.mark.parametrize("mask_kind", ["1d", "2d", "none"])
@pytest.mark.parametrize("dtype,tol", [(torch.complex64, 1e-5), (torch.complex128, 1e-10)])
def test_multicoil_adjoint_dot_product(device, n_sets, mask_kind, dtype, tol):
    # <Ax, y> = <x, A^H y> up to rounding: 1e-5 at single, 1e-10 at double precision
    g = torch.Generator().manual_seed(1)
    maps = _maps(n_sets, 4, 20, 14, dtype, g)
    mask = {"1d": (torch.rand(14, generator=g) > 0.5).float(),
            "2d": (torch.rand(20, 14, generator=g) > 0.5).float(), "none": None}[mask_kind]
    op = MultiCoilMRI(maps.to(device), None if mask is None else mask.to(device))
    assert adjointness_error(op, batch=(3,), dtype=dtype, device=device, generator=g) < tol


@pytest.mark.parametrize("dtype,tol", [(torch.complex64, 1e-5), (torch.complex128, 1e-10)])
def test_singlecoil_adjoint_and_projection(dtype, tol):
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(16, 12, generator=g) > 0.6).float()
    op = SingleCoilMRI(mask)
    assert adjointness_error(op, batch=(2,), dtype=dtype, generator=g) < tol
    # x + A^H(y - A x) is an exact projection: applying A afterwards reproduces y on the mask
    x = torch.randn(16, 12, dtype=dtype, generator=g)
    y = op(torch.randn(16, 12, dtype=dtype, generator=g))
    z = x + op.adjoint(y - op(x))
    assert torch.allclose(op(z), y, atol=10 * tol)


def test_forward_matches_explicit_sense_model_and_batches():
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(3, 8, 6, dtype=torch.complex64, generator=g)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float32)
    op = MultiCoilMRI(maps, mask)
    x = torch.randn(2, 5, 8, 6, dtype=torch.complex64, generator=g)
    y = op(x)
    assert y.shape == (2, 5, 3, 8, 6)
    expected = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(maps * x[1, 2, None], dim=(-2, -1)),
                                                 norm="ortho"), dim=(-2, -1)) * mask
    assert torch.allclose(y[1, 2], expected, atol=1e-5)
    assert torch.all(y[..., mask == 0] == 0)


def test_two_map_sets_sum_coil_signals():
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(2, 3, 8, 8, dtype=torch.complex64, generator=g)
    x = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    both = MultiCoilMRI(maps)(x)
    parts = MultiCoilMRI(maps[0])(x[0]) + MultiCoilMRI(maps[1])(x[1])
    assert torch.allclose(both, parts, atol=1e-5)


def test_operator_is_differentiable_in_x():
    # grad of 0.5||Ax - y||^2 w.r.t. x (torch's conjugate Wirtinger convention) equals A^H(Ax - y)
    g = torch.Generator().manual_seed(5)
    op = MultiCoilMRI(torch.randn(3, 8, 8, dtype=torch.complex64, generator=g), (torch.rand(8, generator=g) > 0.5).float())
    x = torch.randn(8, 8, dtype=torch.complex64, generator=g).requires_grad_()
    y = torch.randn(3, 8, 8, dtype=torch.complex64, generator=g)
    (0.5 * (op(x) - y).abs().pow(2).sum()).backward()
    assert torch.allclose(x.grad, op.adjoint(op(x) - y).detach(), atol=1e-4)


def test_fft_helpers():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 10, 9, dtype=torch.complex128, generator=g)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-12)
    assert torch.allclose(fft2c(x).norm(), x.norm())  # orthonormal (Parseval)
    # DC of a constant image sits at the centre index n // 2
    k = fft2c(torch.ones(8, 7, dtype=torch.complex64))
    assert abs(k[4, 3] - (56 ** 0.5)) < 1e-4
    maps = torch.randn(3, 10, 9, dtype=torch.complex128, generator=g)
    maps = maps / rss(maps)
    img = torch.randn(10, 9, dtype=torch.complex128, generator=g)
    assert torch.allclose(sense_combine(maps * img, maps), img, atol=1e-12)
    assert torch.allclose(rss(maps * img), img.abs(), atol=1e-12)


def test_cg_solves_fully_sampled_sense_problem():
    # normalised maps + full sampling: A^H A is well conditioned; CG reaches relative residual < 1e-4
    g = torch.Generator().manual_seed(7)
    maps = torch.randn(4, 24, 24, dtype=torch.complex64, generator=g)
    op = MultiCoilMRI(maps)
    x_true = torch.randn(3, 24, 24, dtype=torch.complex64, generator=g)
    rhs = op.adjoint(op(x_true))
    x = conjugate_gradient(op.normal, rhs, n_iter=100, tol=1e-6)
    res = (op.normal(x) - rhs).flatten(1).norm(dim=1) / rhs.flatten(1).norm(dim=1)
    assert float(res.max()) < 1e-4


def test_cg_batch_elements_take_their_own_steps():
    # two unrelated problems in one batch give the same answers as solved one by one
    g = torch.Generator().manual_seed(8)
    d = torch.rand(2, 6, 6, generator=g) + 0.1
    rhs = torch.randn(2, 6, 6, dtype=torch.complex128, generator=g)
    batched = conjugate_gradient(lambda x: d * x, rhs, n_iter=50)
    assert torch.allclose(batched, rhs / d, atol=1e-8)
    single = conjugate_gradient(lambda x: d[1] * x, rhs[1], n_iter=50)
    assert torch.allclose(single, batched[1], atol=1e-8)


def test_power_iteration_matches_known_norm():
    # maps normalised to sum |S|^2 = 1 and full sampling: ||A|| = 1 exactly; 2x the maps -> 2
    g = torch.Generator().manual_seed(9)
    maps = torch.randn(4, 12, 12, dtype=torch.complex64, generator=g)
    maps = maps / rss(maps)
    assert power_iteration(MultiCoilMRI(maps), generator=g) == pytest.approx(1.0, rel=1e-4)
    assert power_iteration(MultiCoilMRI(2 * maps), generator=g) == pytest.approx(2.0, rel=1e-4)


def test_bad_shapes_raise_clear_errors():
    maps = torch.zeros(3, 8, 6, dtype=torch.complex64)
    with pytest.raises(OperatorShapeError, match="1D mask of length 5"):
        MultiCoilMRI(maps, torch.ones(5))
    with pytest.raises(OperatorShapeError, match=r"mask of shape \(8, 5\)"):
        MultiCoilMRI(maps, torch.ones(8, 5))
    with pytest.raises(OperatorShapeError, match="maps must be complex"):
        MultiCoilMRI(torch.zeros(8, 6))
    op = MultiCoilMRI(maps)
    with pytest.raises(OperatorShapeError, match="does not end with"):
        op.check_domain(torch.zeros(8, 7, dtype=torch.complex64))
    assert op.H.H is op and op.H.domain_shape == (3, 8, 6)


@pytest.mark.parametrize("n_sets", [1, 2])
@pytest.mark.parametrize("hw", [(12, 10), (11, 9)])
@pytest.mark.parametrize("mask_kind", ["2d", "line", "none"])
def test_normal_equals_adjoint_of_forward(n_sets, hw, mask_kind):
    # the fast normal (shifts folded into maps and mask, readout FFT cancelled for line masks) must equal
    # A^H A, also for odd sizes
    g = torch.Generator().manual_seed(10)
    maps = _maps(n_sets, 3, *hw, torch.complex128, g)
    mask = {"2d": torch.rand(*hw, generator=g), "line": (torch.rand(hw[1], generator=g) > 0.5).float(),
            "none": None}[mask_kind]
    op = MultiCoilMRI(maps, mask)
    x = torch.randn(2, *op.domain_shape, dtype=torch.complex128, generator=g)
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), atol=1e-6)


def test_batched_calls_with_two_leading_dims_match_one_image_at_a_time():
    # the operator runs a CPU batch one element at a time (cache-sized intermediates); the leading shape
    # [2, 3] must come back intact and each element must equal its own single-image result
    from recon.data.simulate import birdcage_maps

    g = torch.Generator().manual_seed(9)
    maps = birdcage_maps(4, (16, 12))
    mask = (torch.rand(12, generator=g) > 0.5).float()
    op = MultiCoilMRI(maps, mask)
    x = torch.complex(torch.randn(2, 3, 16, 12, generator=g), torch.randn(2, 3, 16, 12, generator=g))
    y, n, a = op(x), op.normal(x), op.adjoint(op(x))
    assert y.shape == (2, 3, 4, 16, 12) and n.shape == a.shape == (2, 3, 16, 12)
    for i in range(2):
        for j in range(3):
            assert torch.equal(y[i, j], op(x[i, j]))
            assert torch.equal(n[i, j], op.normal(x[i, j]))
    # float32 FFTs: the normal's single-FFT route equals A^H(A x) to 1e-5 of the largest value
    assert float((n - a).abs().max()) < 1e-5 * float(a.abs().max())
