"""The benchmark's calibration statistics against known answers, and a smoke run of a tiny preset."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri
from scipy.stats import spearmanr

from priors.base import GaussianPrior, PriorInfo
from recon.benchmark.errors import BenchmarkError
from recon.benchmark.presets import (FULL, MRI_SETTINGS, PRESETS, QUICK, TARGETS, CTSetting, MethodRun, Preset,
                                     get_preset)
from recon.benchmark.report import write_outputs
from recon.benchmark.runner import run_benchmark
from recon.benchmark.sources import ct_sources
from recon.benchmark.stats import (ause, calibration, coverage, patch_average, sparsification_curves, spearman,
                                   support_mask)
from recon.benchmark.targets import evaluate_targets
from tests.conftest import SHARED



# ---------------------------------------------------------------------------
# calibration statistics
# ---------------------------------------------------------------------------
def test_spearman_is_one_for_any_increasing_transform_and_minus_one_reversed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    # ranks are all that matter: exp is increasing, so the rank correlation is exactly 1 (up to rounding)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0, abs=1e-12)
    assert spearman(x, -x**3) == pytest.approx(-1.0, abs=1e-12)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=300).astype(float)        # many ties: average ranks
    b = a + rng.normal(scale=2.0, size=300)
    # same definition (Pearson correlation of average ranks) as scipy.stats.spearmanr: equal to rounding
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_of_a_constant_is_nan():
    assert math.isnan(spearman(np.ones(10), np.arange(10.0)))


def test_perfectly_ranked_uncertainty_has_zero_ause():
    rng = np.random.default_rng(2)
    err = np.abs(rng.normal(size=10_000))
    # uncertainty = any increasing function of the error ranks pixels exactly like the oracle
    assert ause(err, 3 * err + 1) == pytest.approx(0.0, abs=1e-12)
    f, by_u, oracle = sparsification_curves(err, err)
    assert by_u[0] == pytest.approx(1.0, abs=1e-12)       # normalised: nothing removed -> 1
    assert np.all(np.diff(oracle) <= 1e-12)                # removing the largest errors never raises the mean


def test_uninformative_uncertainty_ause_matches_half_normal_oracle_area():
    """Independent uncertainty: its curve stays at 1, so AUSE = integral of (1 - oracle). For half-normal
    errors the oracle is (1 - exp(-q^2/2)) / (1 - f) with q = Phi^-1(1 - f/2) (closed form)."""
    rng = np.random.default_rng(3)
    err = np.abs(rng.normal(size=400_000))
    unc = rng.uniform(size=err.size)
    f = np.arange(1, 100) / 100
    q = ndtri(1 - f / 2)
    oracle = np.concatenate([[1.0], (1 - np.exp(-q**2 / 2)) / (1 - f)])
    expected = np.trapezoid(1 - oracle, np.arange(100) / 100)
    # 400k samples: the empirical curves are within ~0.005 of their expectations (2% of the ~0.33 area)
    assert ause(err, unc) == pytest.approx(expected, abs=0.01)
    assert expected > 0.3


def test_coverage_of_gaussian_errors_with_their_own_std_is_95_percent():
    rng = np.random.default_rng(4)
    std = rng.uniform(0.1, 2.0, size=200_000)             # heteroscedastic
    err = std * rng.normal(size=std.size)
    # P(|N(0,1)| <= 1.96) = 0.9500; binomial sd at n=2e5 is 0.0005, so 0.003 is a 6-sigma bound
    assert coverage(err, std) == pytest.approx(0.95, abs=0.003)
    # an std half as large covers P(|N| <= 0.98) = 0.6729
    assert coverage(err, std / 2) == pytest.approx(0.6729, abs=0.003)


def test_patch_average_takes_block_means_and_drops_edges():
    x = np.kron(np.arange(6.0).reshape(2, 3), np.ones((8, 8)))   # 16 x 24, constant 8x8 blocks 0..5
    x = np.pad(x, ((0, 5), (0, 3)), constant_values=100.0)      # edges that do not fill a patch
    assert np.array_equal(patch_average(x, 8), np.arange(6.0).reshape(2, 3))


def test_calibration_of_std_equal_to_error_is_perfect():
    rng = np.random.default_rng(5)
    ref = rng.uniform(0.5, 1.0, size=(32, 32))
    err = rng.uniform(0.0, 0.1, size=(32, 32))
    mean = ref + err
    out = calibration(mean, err, ref, support_mask(ref))
    # std = |error| exactly: both rank statistics are 1, the sparsification curve is the oracle, and every
    # error lies inside 1.96 std
    assert out["spearman"] == pytest.approx(1.0, abs=1e-12)
    assert out["spearman_patch"] == pytest.approx(1.0, abs=1e-12)
    assert out["ause"] == pytest.approx(0.0, abs=1e-12)
    assert out["coverage"] == 1.0


def test_patch_averaging_recovers_correlation_hidden_by_pixel_noise():
    """Error = smooth pattern + pixel noise, std = the pattern: patch means average the noise away, so the
    patch Spearman must exceed the pixel one (the reason the target is stated after patch averaging)."""
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    pattern = 0.05 * (1 + np.sin(6 * xx) * np.cos(4 * yy))
    err = np.abs(pattern + 0.05 * rng.normal(size=pattern.shape))
    ref = np.ones((64, 64))
    out = calibration(ref + err, pattern, ref, support_mask(ref))
    assert out["spearman_patch"] > out["spearman"] + 0.2
    assert out["spearman_patch"] > 0.8


# ---------------------------------------------------------------------------
# targets from records
# ---------------------------------------------------------------------------
def _rec(label, method, setting, case, psnr, nfe, mean_std_rel=None, spearman_patch=None, modality="mri"):
    return {"label": label, "method": method, "setting": setting, "case": case, "psnr": psnr, "nfe": nfe,
            "modality": modality, "dataset": "x", "posterior": method in ("dds", "projection"),
            "mean_std_rel": mean_std_rel, "spearman_patch": spearman_patch}


def test_targets_compare_paired_cases_and_report_failures():
    preset = Preset(
        name="t", brainweb_subjects=(), brainweb_slices=0, brainweb_kspace=None, real_t1=False,
        real_t1_kspace_crop=None,
        poisson_files=(), ct_slices=(), ct_size=None, mri_settings=MRI_SETTINGS[:3], ct_settings=(),
        n_samples=2,
        runs=(MethodRun("dds", "dds"), MethodRun("projection", "projection"), MethodRun("unet", "unet")))
    recs = []
    for s, dds, proj, unet in (("random-4x", 30.0, 30.3, 31.0), ("random-8x", 27.0, 28.0, 26.0),
                               ("equispaced-4x", 29.0, 29.0, 26.5)):
        for c in ("a", "b"):
            recs += [_rec("dds", "dds", s, c, dds, 50, 0.01 if s == "random-4x" else 0.02, 0.5),
                     _rec("projection", "projection", s, c, proj, 1000, 0.03 if s == "random-4x" else 0.02),
                     _rec("unet", "unet", s, c, unet, 0)]
    speed, ood, order, rho = evaluate_targets(preset, recs)
    assert speed.status == "FAIL" and speed.values["random-8x"]["gap_db"] == pytest.approx(-1.0)
    assert ood.status == "PASS" and ood.values["equispaced-4x"]["gap_db"] == pytest.approx(2.5)
    assert ood.values["random-4x"]["gap_db"] == pytest.approx(-1.0)          # reported, no target
    assert order.status == "FAIL" and "projection" in order.detail            # 3% at 4x > 2% at 8x
    assert rho.status == "PASS" and rho.values["overall"] == pytest.approx(0.5)


def test_speed_target_without_a_1000_nfe_projection_is_not_evaluated_but_informative():
    preset = Preset(
        name="t", brainweb_subjects=(), brainweb_slices=0, brainweb_kspace=None, real_t1=False,
        real_t1_kspace_crop=None, poisson_files=(), ct_slices=(), ct_size=None, mri_settings=MRI_SETTINGS[1:2],
        ct_settings=(), n_samples=2,
        runs=(MethodRun("dds", "dds"), MethodRun("projection@100", "projection", 100)))
    recs = [_rec("dds", "dds", "random-8x", "a", 26.0, 50), _rec("dds", "dds", "random-8x", "b", 24.0, 50),
            _rec("projection@100", "projection", "random-8x", "a", 25.0, 99)]
    speed = evaluate_targets(preset, recs)[0]
    # never a pass or fail from a budget below 1000 NFE; the paired gap uses the shared case "a" only
    assert speed.status == "NOT EVALUATED"
    assert speed.values["gap_db"] == pytest.approx(1.0) and speed.values["cases"] == 1


# ---------------------------------------------------------------------------
# smoke run of a tiny preset with Gaussian stand-in priors
# ---------------------------------------------------------------------------
def _stand_in(modality: str, shape: tuple[int, ...]) -> GaussianPrior:
    """Gaussian priors: complex Fourier-diagonal with a power-law spectrum (MRI), independent pixels (CT)."""
    h, w = shape[-2:]
    if modality == "mri":
        ky = torch.fft.fftshift(torch.fft.fftfreq(h))[:, None] * h
        kx = torch.fft.fftshift(torch.fft.fftfreq(w))[None, :] * w
        var = 1.0 / (1 + (ky**2 + kx**2) / 4.0) ** 1.5
        var = var / var.sum() * h * w * 0.1
        info = PriorInfo(name="gaussian-mri", value_kind="complex", modality="mri", normalization="p99",
                         sigma_min=1e-3, sigma_max=100.0)
        return GaussianPrior(torch.zeros(h, w, dtype=torch.complex64), var, "fourier", info)
    info = PriorInfo(name="gaussian-ct", value_kind="real", modality="ct", normalization="fixed",
                     sigma_min=1e-3, sigma_max=100.0)
    return GaussianPrior(torch.ones(h, w), torch.full((h, w), 0.25), "pixel", info)


TINY = Preset(
    name="tiny", brainweb_subjects=(51,), brainweb_slices=1, brainweb_kspace=(64, 56), real_t1=False,
    real_t1_kspace_crop=None, poisson_files=(), ct_slices=(100,), ct_size=(64, 64),
    mri_settings=(MRI_SETTINGS[0], MRI_SETTINGS[1]), ct_settings=(CTSetting("sparse-30", 30),),
    n_samples=4,
    runs=(MethodRun("fbp", "fbp", modalities=("ct",)),
          MethodRun("dds", "dds", 10),
          MethodRun("dds@4", "dds", 4, settings=("random-8x",)),
          MethodRun("ccdf", "ccdf", 6, (("sigma_start", 0.5),), settings=("random-8x",), max_cases=1,
                       modalities=("mri",))),
)


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data (BrainWeb, head CT)")
def test_tiny_preset_writes_a_complete_report(tmp_path):
    torch.set_num_threads(1)
    result = run_benchmark(TINY, _stand_in, lambda m: None, root=SHARED / "data")
    result.meta.update(machine="test", device="cpu", priors="Gaussian stand-ins", unets="none")
    targets = write_outputs(result, tmp_path, "pytest")
    # 2 MRI settings x (dds) + sweep (dds@4, ccdf probe) on random-8x + CT (fbp, dds) = 6 records
    labels = sorted((r["setting"], r["label"]) for r in result.records)
    assert labels == sorted([("random-4x", "dds"), ("random-8x", "dds"), ("random-8x", "dds@4"),
                             ("random-8x", "ccdf"), ("sparse-30", "fbp"), ("sparse-30", "dds")])
    data = json.loads((tmp_path / "results.json").read_text())           # strict JSON: NaN became null
    assert data["preset"] == "tiny" and len(data["records"]) == 6 and len(data["targets"]) == 4
    dds = {r["setting"]: r for r in data["records"] if r["label"] == "dds"}
    assert dds["random-4x"]["nfe"] == 10 and dds["sparse-30"]["nfe"] == 10
    for r in dds.values():
        assert -1 <= r["spearman"] <= 1 and 0 <= r["coverage"] <= 1 and r["ause"] >= 0 and r["psnr"] > 10
    # the exact Gaussian posterior's variance grows when measurements are removed; the sampler follows
    assert dds["random-8x"]["mean_std_rel"] > dds["random-4x"]["mean_std_rel"]
    assert targets[2].status == "PASS"
    report = (tmp_path / "REPORT.md").read_text()
    for t in targets:
        assert t.line() in report
    for fig in ("quality_mri.png", "quality_ct.png", "cost.png", "calibration.png", "examples_mri.png"):
        assert (tmp_path / fig).stat().st_size > 10_000 and f"]({fig})" in report


# ---------------------------------------------------------------------------
# presets and the command
# ---------------------------------------------------------------------------
def test_presets_use_only_the_test_splits():
    from recon.data.brainweb import BRAINWEB_TEST
    from recon.data.ct_slices import CT_TEST

    for preset in PRESETS.values():
        assert set(preset.brainweb_subjects) <= set(BRAINWEB_TEST)
        assert set(preset.ct_slices) <= set(CT_TEST)
    assert FULL.ct_slices == CT_TEST and FULL.brainweb_subjects == BRAINWEB_TEST
    with pytest.raises(BenchmarkError, match="unknown preset"):
        get_preset("medium")


def test_runs_for_applies_settings_and_case_limits():
    runs = {r.label for r in QUICK.runs_for("mri", "random-8x", 1)}
    assert {"dds", "ccdf", "dds@10", "sense"} <= runs
    assert "projection@50" not in runs                     # probes run on the first case only
    assert "projection@50" in {r.label for r in QUICK.runs_for("mri", "random-8x", 0)}
    assert "ccdf" not in {r.label for r in QUICK.runs_for("mri", "poisson-8x", 0)}
    assert "sirt" not in {r.label for r in QUICK.runs_for("mri", "random-4x", 0)}   # CT-only baseline


def test_targets_preset_can_evaluate_every_target():
    """The speed target needs projection at >= 1000 NFE beside dds on random 4x/8x; the std-order target
    needs every posterior method at both accelerations."""
    import solvers

    assert 1000 >= 20 * solvers.METHODS["dds"].default_nfe
    for setting in ("random-4x", "random-8x"):
        labels = {r.label for r in TARGETS.runs_for("mri", setting, 0)}
        assert {"dds", "projection@1001", "score-ald", "dps", "ccdf", "unet"} <= labels
        assert "projection@1001" in {r.label for r in TARGETS.runs_for("mri", setting, 1)}
        assert "projection@1001" not in {r.label for r in TARGETS.runs_for("mri", setting, 2)}
    proj = next(r for r in TARGETS.runs if r.label == "projection@1001")
    assert solvers.METHODS["projection"]().steps_for_nfe(proj.nfe) * 2 - 1 >= 1000    # NFE actually made
    assert get_preset("targets") is TARGETS


def test_ct_sources_keep_to_the_named_split():
    with pytest.raises(BenchmarkError, match="not in the val split"):
        ct_sources([90], None, split="val")


def test_command_rejects_an_unknown_modality(capsys):
    import argparse

    from recon.commands import benchmark as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    assert cmd.run(p.parse_args(["--out", "x", "--modality", "pet"])) == 2
    assert "--modality" in capsys.readouterr().err


def test_networks_that_cannot_load_are_skipped_with_a_note(tmp_path):
    import argparse

    from recon.commands.benchmark import _Networks

    missing = str(tmp_path / "missing.pt")
    args = argparse.Namespace(device="cpu", mri_prior=missing, ct_prior=missing, mri_unet=missing, ct_unet=missing)
    notes: list[str] = []
    nets = _Networks(args, notes)
    assert nets.prior("mri", (8, 8)) is None and nets.unet("ct") is None
    assert nets.prior("mri", (8, 8)) is None and len(notes) == 2          # tried once per modality
    assert notes[0].startswith(f"MRI prior '{missing}' could not be loaded") and "posterior methods" in notes[0]
    assert notes[1].startswith(f"CT U-Net '{missing}' could not be loaded") and "`unet` baseline" in notes[1]


def test_a_file_sampled_case_does_not_depend_on_the_files_units():
    """A prospectively undersampled file in scanner units (here 1e12) is brought to unit intensity, as `recon
    reconstruct` does: the noise-aware CG-SENSE weight, which takes the estimated noise in that scale, then gives
    the same image up to the units (before, a noise std of ~1e10 made the weight so large that SENSE returned 0)."""
    from recon.baselines.mri import cg_sense
    from recon.benchmark.cases import mri_case
    from recon.benchmark.scoring import agreement
    from recon.benchmark.sources import FileSampledSource
    from recon.data.masks import make_mask
    from recon.data.simulate import simulate_multicoil

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    img = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).float() * (1 + 0.5 * (xx > 0).float())
    k, _, _ = simulate_multicoil(img, n_coils=4, noise_std=0.01, seed=0)
    mask = make_mask("poisson", (64, 64), 4.0, 0.25, seed=0).mask
    k = (k * mask).numpy()
    psnr = []
    for units in (1.0, 1e12):
        case = mri_case(FileSampledSource("file", "f", k * units), None, 0, torch.device("cpu"))
        p = case.problem
        mean = case.display(cg_sense(p.op, p.y, noise_std=p.noise_std).mean).numpy()
        psnr.append(agreement(img.numpy(), mean)["psnr"])   # after a least-squares intensity match
    assert psnr[0] > 25 and psnr[1] == pytest.approx(psnr[0], abs=0.01)


def test_a_fine_tuned_priors_training_steps_count_the_run_it_started_from():
    from recon.commands.benchmark import training_steps

    meta = {"steps": 4941, "init": {"source": "brain-mri-complex", "steps": 4074, "init": {"steps": 10}}}
    assert training_steps(meta) == (9025, 4941)
    assert training_steps({"steps": "965"}) == (965, 965)
    assert training_steps({}) is None
