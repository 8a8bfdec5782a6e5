"""Device hygiene that a CPU-only machine can check: every seeded random draw names its device, and
`benchmarks/cuda_check.py` says clearly when there is no CUDA device."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import torch

from operators.base import adjointness_error, power_iteration
from operators.mri import MultiCoilMRI
from tests.conftest import ROOT

PACKAGES = ("operators", "priors", "solvers", "recon")
#: factory draws that create a tensor from a shape: with a generator, torch needs device= to match the
#: generator's device (a CUDA generator with the default CPU device is refused). Draws that take an input
#: tensor (poisson, bernoulli, multinomial, normal(mean, std)) inherit its device and are not listed.
FACTORY_DRAWS = {"rand", "randn", "randint", "randperm"}


def _draws_missing_device() -> list[str]:
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in FACTORY_DRAWS:
                    continue
                kws = {k.arg for k in node.keywords}
                if "generator" in kws and "device" not in kws:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_every_seeded_random_draw_in_the_package_names_its_device():
    # the bug class: torch.randn(shape, generator=cuda_gen) without device= raises on CUDA
    # ("Expected a 'cpu' device type for generator"); every solver crashed in power_iteration that way
    bad = _draws_missing_device()
    assert not bad, "draws with generator= but no device=:\n" + "\n".join(bad)


def test_the_ast_check_catches_a_draw_without_device(tmp_path, monkeypatch):
    # the checker itself: a synthetic package with one offending draw must be reported
    pkg = tmp_path / "operators"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import torch\ng = torch.Generator()\nx = torch.randn(3, generator=g)\n"
                                "y = torch.randn(3, generator=g, device=g.device)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("operators",))
    bad = _draws_missing_device()
    assert len(bad) == 1 and "bad.py:3" in bad[0]


def test_seeded_draws_are_made_on_the_generators_device(monkeypatch):
    # run-time version of the check: record every randn made with a generator and require that its
    # device is the generator's (what torch enforces on CUDA, and does not check on a CPU-only machine)
    calls: list[tuple[torch.device, torch.device]] = []
    real = torch.randn

    def spy(*args, **kw):
        if kw.get("generator") is not None:
            calls.append((torch.device(kw.get("device") or "cpu"), kw["generator"].device))
        return real(*args, **kw)

    monkeypatch.setattr(torch, "randn", spy)
    maps = torch.ones(2, 8, 8, dtype=torch.complex64) / 2**0.5
    op = MultiCoilMRI(maps, torch.ones(8))
    g = torch.Generator().manual_seed(0)
    # a unit-norm map set and a full mask: A^H A = I, so ||A|| = 1 (power iteration converges at once)
    assert abs(power_iteration(op, n_iter=5, generator=g) - 1.0) < 1e-5
    assert adjointness_error(op, generator=g) < 1e-5
    assert len(calls) == 3 and all(d == gd for d, gd in calls)


def test_cuda_check_without_cuda_says_so_and_exits_3():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on GPU machines too
    res = subprocess.run([sys.executable, "-m", "benchmarks.cuda_check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 3, res.stderr[-500:]
    assert res.stdout.strip().startswith("no CUDA device:")


def test_cuda_check_lists_run_on_the_cpu(capsys):
    # the same check lists the GPU run uses, on the CPU: every constructor and call in the script matches the
    # package's API, and every result lands on the input's device (the CUDA-only cone beam is left out)
    import benchmarks.cuda_check as cc
    import solvers

    cpu = torch.device("cpu")
    checks = [c for c in cc.operator_checks(cpu) if "ConeBeam3D" not in c[0]]
    checks += cc.solver_checks(cpu, nfe=6) + cc.baseline_checks(cpu)
    rows = cc.run_checks(checks)
    failed = [(name, detail) for name, ok, _, detail in rows if not ok]
    assert not failed, failed
    # 8 operator checks on the CPU + every solver + bf16 + CT + 12 baselines
    assert len(rows) == 8 + len(solvers.METHODS) + 2 + 12


def test_a_ct_failure_does_not_hide_the_mri_baseline_checks(monkeypatch):
    # on a machine whose ASTRA cannot run (an H200 with CUDA 13 only: the astra-toolbox wheel needs CUDA 12's
    # libcufft), the CT sinogram used to be made while the baseline list was built, so its error replaced every
    # baseline check, the MRI ones included, by one failed "setup" row
    import benchmarks.cuda_check as cc
    from operators import ParallelBeam2D

    def broken(self, x):
        raise RuntimeError("no ASTRA here")

    monkeypatch.setattr(ParallelBeam2D, "forward", broken)
    rows = cc.run_checks(cc.baseline_checks(torch.device("cpu")))
    by_name = {name: ok for name, ok, _, _ in rows}
    assert len(rows) == 12
    assert all(ok for name, ok in by_name.items() if "CT" not in name)
    assert not any(ok for name, ok in by_name.items() if name.startswith("baseline CT"))
