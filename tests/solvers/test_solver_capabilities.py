"""Operators own their capabilities; solvers ask for them and never check an operator's class.

* AST check: no ``solvers/*.py`` imports or names a concrete operator class.
* Capabilities per operator class: `exact_projection`, `per_coil`, `as_image`.
* `CCDF` composes the predictor-corrector steps instead of inheriting from `Projection`.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch

import operators
import solvers
from operators.base import LinearOperator, OperatorCapabilityError
from operators.fft import rss
from operators.mri import CoilwiseMRI, MultiCoilMRI, SingleCoilMRI
from operators.nufft import NonCartesianMRI
from operators.trajectories import radial
from operators.weighted import WeightedOperator
from priors.base import GaussianPrior
from solvers import CCDF, Projection, SolverError

SOLVERS_DIR = Path(solvers.__file__).resolve().parent
ALLOWED_MODULES = ("operators.base",)


def _operator_class_names() -> set[str]:
    """Names of every `LinearOperator` subclass defined in an `operators` module (concrete or private)."""
    names = set()
    for info in pkgutil.iter_modules(operators.__path__):
        module = importlib.import_module(f"operators.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, LinearOperator) and obj is not LinearOperator:
                names.add(name)
    return names


def concrete_operator_uses(source: str, filename: str = "<source>") -> list[str]:
    """Where `source` imports or names a concrete operator class: ``["file:line: what", ...]``.

    Allowed: anything from `operators.base`, and plain functions (not classes) from other `operators` modules.
    Flagged: ``import operators.x`` of any other module, ``from operators... import C`` with C a class, and
    any name or attribute spelled like an operator class (``isinstance(op, MultiCoilMRI)``, ``m.CoilwiseMRI``).
    """
    class_names = _operator_class_names()
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "operators" and alias.name not in ALLOWED_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "operators":
            if node.module in ALLOWED_MODULES:
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(module, alias.name, None)
                if obj is None or inspect.isclass(obj) or inspect.ismodule(obj):
                    found.append(f"{where}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Name) and node.id in class_names:
            found.append(f"{where}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in class_names:
            found.append(f"{where}: .{node.attr}")
    return found


# -- solvers stay generic ----------------------------------------------------------------------------------
def test_no_solver_module_uses_a_concrete_operator_class():
    files = sorted(SOLVERS_DIR.glob("*.py"))
    assert len(files) >= 9
    found = [hit for f in files for hit in concrete_operator_uses(f.read_text(), f.name)]
    assert found == []


@pytest.mark.parametrize("snippet", [
    "from operators.mri import CoilwiseMRI",
    "from operators import MultiCoilMRI",
    "import operators.mri",
    "def f(op):\n    return isinstance(op, operators.SingleCoilMRI)",
    "def f(op):\n    return type(op) is NonCartesianMRI",
])
def test_the_ast_check_catches_class_imports_and_checks(snippet):
    assert concrete_operator_uses(snippet) != []


@pytest.mark.parametrize("snippet", [
    "from operators.base import LinearOperator, OperatorCapabilityError",
    "import operators.base",
    "from operators.fft import rss",
    "from operators.linalg import conjugate_gradient",
])
def test_the_ast_check_allows_the_base_and_plain_functions(snippet):
    assert concrete_operator_uses(snippet) == []


# -- capabilities per operator class -----------------------------------------------------------------------
def _maps(n_sets: int, c: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    shape = (c, h, w) if n_sets == 1 else (n_sets, c, h, w)
    return torch.randn(*shape, dtype=torch.complex64, generator=g)


def test_the_base_class_defaults_are_safe():
    class Plain(LinearOperator):
        domain_shape = range_shape = (4,)

        def forward(self, x):
            return x

        def adjoint(self, y):
            return y

    op = Plain()
    x = torch.randn(2, 4)
    assert op.exact_projection is False
    assert op.as_image(x) is x
    with pytest.raises(OperatorCapabilityError, match="Plain has no per-coil form"):
        op.per_coil()


def test_single_coil_and_coilwise_projections_are_exact():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(8, 8, generator=g) > 0.5).float()
    for op in (SingleCoilMRI(mask), CoilwiseMRI(mask, 3, (8, 8))):
        assert op.exact_projection is True
        # A A^H is the mask: a measurement in the range of A is left unchanged
        y = op(torch.randn(op.domain_shape, dtype=torch.complex64, generator=g))
        assert torch.allclose(op(op.adjoint(y)), y, atol=1e-6)


def test_single_coil_has_no_per_coil_form_and_shows_its_image_unchanged():
    op = SingleCoilMRI(torch.ones(8, 8))
    x = torch.randn(2, 8, 8, dtype=torch.complex64)
    assert op.as_image(x) is x
    with pytest.raises(OperatorCapabilityError, match="SingleCoilMRI"):
        op.per_coil()


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
@pytest.mark.parametrize("mask_kind", ["lines", "none"])
def test_multicoil_is_not_exact_and_its_per_coil_form_matches_on_coil_images(hw, mask_kind):
    g = torch.Generator().manual_seed(1)
    maps = _maps(1, 3, *hw, g)
    mask = (torch.rand(hw[1], generator=g) > 0.5).float() if mask_kind == "lines" else None
    op = MultiCoilMRI(maps, mask)
    assert op.exact_projection is False
    coilwise = op.per_coil()
    assert isinstance(coilwise, CoilwiseMRI) and coilwise.exact_projection is True
    assert coilwise.domain_shape == coilwise.range_shape == op.range_shape
    x = torch.randn(2, *hw, dtype=torch.complex64, generator=g)
    coil_images = maps * x.unsqueeze(-3)                 # S x: [2, C, H, W]
    assert torch.allclose(coilwise(coil_images), op(x), atol=1e-5)
    assert op.as_image(x) is x


def test_multicoil_with_two_map_sets_has_no_per_coil_form():
    op = MultiCoilMRI(_maps(2, 3, 8, 8, torch.Generator().manual_seed(2)))
    with pytest.raises(OperatorCapabilityError, match="MultiCoilMRI with 2 map sets"):
        op.per_coil()


def test_coilwise_image_is_the_root_sum_of_squares_over_coils():
    op = CoilwiseMRI(torch.ones(8, 8), 3, (8, 8))
    x = torch.randn(2, 3, 8, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    img = op.as_image(x)
    assert img.shape == (2, 8, 8) and not img.is_complex()
    assert torch.equal(img, rss(x, dim=-3))


def test_noncartesian_and_weighted_operators_have_no_per_coil_form():
    g = torch.Generator().manual_seed(4)
    nufft = NonCartesianMRI(_maps(1, 2, 8, 8, g), radial(8, 6), toeplitz=False)
    assert nufft.exact_projection is False
    with pytest.raises(OperatorCapabilityError, match="NonCartesianMRI has no per-coil form"):
        nufft.per_coil()
    # a weighting destroys both capabilities of the operator it wraps
    single = SingleCoilMRI(torch.ones(8, 8))
    weighted = WeightedOperator(single, torch.full((8, 8), 0.5))
    assert weighted.exact_projection is False
    with pytest.raises(OperatorCapabilityError, match="WeightedOperator"):
        weighted.per_coil()


# -- the solvers ask the operator ----------------------------------------------------------------------------
def test_per_coil_without_a_coilwise_form_is_a_solver_error_naming_the_operator():
    g = torch.Generator().manual_seed(5)
    op = MultiCoilMRI(_maps(2, 3, 8, 8, g))
    prior = GaussianPrior(torch.zeros(8, 8, dtype=torch.complex64), torch.ones(8, 8))
    y = op(torch.randn(2, 8, 8, dtype=torch.complex64, generator=g))
    for method in ("projection", "ccdf"):
        with pytest.raises(SolverError, match=f"{method}: dc='per-coil' .*MultiCoilMRI with 2 map sets"):
            solvers.sample(method, op, y, prior, n_samples=1, nfe=3, dc="per-coil", progress=False)


def test_ccdf_per_coil_returns_rss_magnitudes():
    g = torch.Generator().manual_seed(6)
    op = MultiCoilMRI(_maps(1, 3, 8, 8, g), (torch.rand(8, generator=g) > 0.5).float())
    prior = GaussianPrior(torch.zeros(8, 8, dtype=torch.complex64), torch.ones(8, 8))
    y = op(torch.randn(8, 8, dtype=torch.complex64, generator=g))
    post = solvers.sample("ccdf", op, y, prior, n_samples=2, nfe=3, dc="per-coil", progress=False)
    assert post.samples.shape == (2, 8, 8) and not post.samples.is_complex() and (post.samples >= 0).all()


# -- ccdf composes, it does not inherit ----------------------------------------------------------------------
def test_ccdf_is_not_a_projection_subclass():
    assert not issubclass(CCDF, Projection)
    from solvers.predictor_corrector import PredictorCorrector
    assert CCDF.__mro__[1] is PredictorCorrector and Projection.__mro__[1] is PredictorCorrector


def test_ccdf_keeps_its_hyper_parameters_and_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(CCDF)}
    assert fields == {"snr": 0.32, "corrector_steps": 0, "dc": "auto", "lam": 1.0, "cg_iters": 3,
                      "noised_measurement": None, "sigma_min": None, "sigma_start": 0.1, "start_noise": 3.0,
                      "init": "least-squares"}
    assert CCDF.default_nfe == 20 and CCDF.name == "ccdf"


def test_ccdf_hyper_parameters_reach_the_data_consistency():
    g = torch.Generator().manual_seed(7)
    op = MultiCoilMRI(_maps(1, 3, 8, 8, g), (torch.rand(8, generator=g) > 0.5).float())
    prior = GaussianPrior(torch.zeros(8, 8, dtype=torch.complex64), torch.ones(8, 8))
    y = op(torch.randn(8, 8, dtype=torch.complex64, generator=g))

    def run(**hp):
        return solvers.sample("ccdf", op, y, prior, n_samples=2, nfe=4, progress=False, **hp)

    base = run()
    assert base.hparams["dc"] == "auto" and "sigma_max" not in base.hparams
    assert not torch.equal(run(dc="cg").samples, base.samples)
    assert not torch.equal(run(dc="cg", lam=0.5).samples, run(dc="cg").samples)
    with pytest.raises(SolverError, match="dc must be one of"):
        run(dc="nope")
    corrected = run(corrector_steps=1)
    # NFE = n_steps * (1 + c) - c: 4 buys 2 steps, which spend 3 (no corrector after the last step)
    assert corrected.hparams["n_steps"] == 2 and corrected.nfe == 3



def test_ccdf_start_is_raised_to_three_sigma_y_and_capped_at_the_prior_range():
    from types import SimpleNamespace

    def ctx(sigma_y: float, sigma_max: float = 5.0):  # what start_level reads of a Context
        return SimpleNamespace(sigma_y=sigma_y, prior=SimpleNamespace(info=SimpleNamespace(sigma_max=sigma_max)))

    assert CCDF().start_level(ctx(0.01)) == 0.1                 # 3 sigma_y = 0.03 < sigma_start: unchanged
    assert CCDF().start_level(ctx(0.2)) == pytest.approx(0.6)   # noisy data: 3 sigma_y
    assert CCDF().start_level(ctx(0.2, sigma_max=0.4)) == 0.4   # never above the prior's range
    assert CCDF(start_noise=0.0).start_level(ctx(0.2)) == 0.1
    with pytest.raises(solvers.SolverError, match="start_noise"):
        CCDF(start_noise=-1.0).start_level(ctx(0.2))
