"""Calibrated intervals: conformal risk control and RCPS on synthetic posteriors whose coverage is known."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch

import solvers
from priors.registry import weights_sha256
from recon import intervals as iv
from recon.problems.ct import CTSpec
from solvers.posterior import Posterior


def _images(rng: np.random.Generator, n: int, size: int = 24, std_ratio: float = 0.5):
    """Gaussian 'posteriors': truth = mean + sigma z; the reported std is std_ratio * sigma (too small)."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    disc = (xx**2 + yy**2 < 0.7).astype(float)
    mean = (0.2 + rng.uniform(0.5, 1.0, (n, 1, 1))) * disc + 0.01 * rng.random((n, size, size))
    sigma = 0.02 + 0.05 * rng.random((n, size, size)) * disc
    truth = mean + sigma * rng.standard_normal((n, size, size))
    return mean, std_ratio * sigma, truth


def test_crc_reaches_the_target_coverage_on_held_out_images():
    rng = np.random.default_rng(0)
    mean, std, truth = _images(rng, 400)
    entry = iv.fit_entry("dds", "mri", "R<=5", mean[:100], std[:100], truth[:100], alpha=0.05)
    held = iv.coverage(mean[100:], std[100:], truth[100:], entry.lam)
    assert 0.945 <= held <= 0.97, (entry.lam, held)
    # the uncalibrated Gaussian rule on a std that is half the truth covers far less
    assert iv.coverage(mean[100:], std[100:], truth[100:], iv.gaussian_lambda(0.05)) < 0.80
    # a closed-form check: the reported std is half the true one, so lambda is about 2 * 1.96 / (1 + floor)
    assert 3.0 < entry.lam < 4.2


def test_crc_expected_risk_is_controlled_over_repeated_splits():
    rng = np.random.default_rng(1)
    mean, std, truth = _images(rng, 300, size=16)
    loss = iv.losses(mean, std, truth)
    risks = []
    for _ in range(200):
        perm = rng.permutation(len(loss))
        cal, test = perm[:100], perm[100:]
        lam = iv.crc_lambda(loss[cal], 0.05)
        j = int(np.searchsorted(iv.LAMBDA_GRID, lam))
        risks.append(loss[test, j].mean())
    assert np.mean(risks) <= 0.05 + 0.002          # E[risk] <= alpha (the guarantee), up to Monte Carlo error
    assert np.mean(risks) >= 0.03                  # and not vacuous


def test_rcps_failure_probability_is_at_most_delta():
    rng = np.random.default_rng(2)
    mean, std, truth = _images(rng, 2400, size=8)
    loss = iv.losses(mean, std, truth)
    alpha, delta, n_cal = 0.1, 0.1, 600
    fails = []
    for _ in range(100):
        perm = rng.permutation(len(loss))
        lam = iv.rcps_lambda(loss[perm[:n_cal]], alpha, delta)
        assert lam is not None
        j = int(np.searchsorted(iv.LAMBDA_GRID, lam))
        fails.append(loss[perm[n_cal:], j].mean() > alpha)
    assert np.mean(fails) <= delta
    # with too few images the Hoeffding bound cannot reach alpha = 0.05
    assert iv.rcps_lambda(loss[:20], 0.05, 0.1) is None


def test_small_calibration_sets_certify_the_small_set_level():
    # 12 images (head CT's validation slices): CRC cannot certify 0.05 (1/13 > 0.05), so the entry keeps the
    # nominal alpha and takes the CRC lambda at 0.10; over repeated splits the expected risk stays <= 0.10, and
    # the interval is wider than the 95% one (at most 2.5% of the calibration pixels uncovered)
    rng = np.random.default_rng(3)
    mean, std, truth = _images(rng, 400, size=16)
    assert not iv.crc_feasible(12, 0.05) and iv.crc_feasible(19, 0.05) and iv.crc_feasible(12, 0.10)
    entry = iv.fit_entry("dds", "ct", "ct", mean[:12], std[:12], truth[:12], alpha=0.05)
    loss = iv.losses(mean, std, truth)
    assert entry.alpha == 0.05 and entry.certified_alpha == iv.SMALL_SET_ALPHA
    assert entry.lam == iv.crc_lambda(loss[:12], 0.10) and entry.lam > iv.crc_lambda(loss[:100], 0.05)
    assert "<= 0.1 " in entry.guarantee() and "would need >= 19 images" in entry.guarantee()
    assert iv.fit_entry("dds", "mri", "R<=5", mean[:19], std[:19], truth[:19]).certified_alpha is None
    risks = []
    for _ in range(300):
        perm = rng.permutation(len(loss))
        lam = iv.fit_entry("dds", "ct", "ct", mean[perm[:12]], std[perm[:12]], truth[perm[:12]]).lam
        risks.append(loss[perm[12:], int(np.searchsorted(iv.LAMBDA_GRID, lam))].mean())
    assert np.mean(risks) <= 0.10                  # the certified level
    assert 0.005 <= np.mean(risks) <= 0.04         # about 2.5% in practice: the interval covers more than 95%
    table = iv.CalibrationTable("p", [entry])
    lam, record = iv.choose_lambda(table, "dds", "ct", None)
    assert record["calibrated"] and lam == entry.lam and record["guarantee"] == entry.guarantee()


def test_posterior_interval_magnitude_and_real():
    samples = torch.tensor([[1.0, -1.0], [3.0, 1.0]])[:, None, :].repeat(1, 2, 1)  # [N=2, 2, 2] real
    post = Posterior.from_samples(samples)
    lo, hi = post.interval(0.05)
    std = samples.std(0)
    half = 1.959964 * (std + 0.1 * std.mean())
    assert torch.allclose(hi - post.mean, half, atol=1e-4) and torch.allclose(post.mean - lo, half, atol=1e-4)
    cpost = Posterior.from_samples(samples.to(torch.complex64) * 1j)
    clo, chi = cpost.interval(lam=2.0)
    object_std = cpost.std[:, 0].mean()  # the object is where |mean| = 2 (first column); the other is 0
    assert (clo >= 0).all() and torch.allclose(chi, cpost.mean.abs() + 2.0 * (cpost.std + 0.1 * object_std))
    with pytest.raises(ValueError, match="no std"):
        Posterior(mean=torch.zeros(2, 2)).interval()


def test_choose_lambda_falls_back_and_says_so(tmp_path):
    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 3.0, 0.05, "crc", 40),
                                      iv.CalibrationEntry("dds", "mri", "R>5", 3.5, 0.05, "crc", 40)])
    table.save(tmp_path / "t.json")
    table = iv.CalibrationTable.load(tmp_path / "t.json")
    lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0)
    assert lam == 3.0 and rec["calibrated"] and rec["band"] == "R<=5"
    lam, rec = iv.choose_lambda(table, "dds", "mri", 8.0, alpha=0.05)
    assert lam == 3.5 and rec["calibrated"]
    lam, rec = iv.choose_lambda(table, "ccdf", "mri", 4.0)
    assert lam == pytest.approx(1.959964) and not rec["calibrated"] and "Gaussian" in rec["reason"]
    lam, rec = iv.choose_lambda(None, "dds", "ct", None)
    assert not rec["calibrated"]


def test_an_entry_keeps_the_floor_it_was_fitted_with(tmp_path):
    """The U-Net's line-bootstrap spread is fitted with its own floor (`METHOD_FLOORS`): the entry records it, the
    lookup returns it with lambda, and an entry written before floors were recorded reads as the samplers' 0.1."""
    rng = np.random.default_rng(3)
    mean, std, truth = _images(rng, 300)
    floor = iv.method_floor("unet")
    assert floor != iv.method_floor("dds") == 0.1
    entry = iv.fit_entry("unet", "mri", "R>5", mean[:100], std[:100], truth[:100])
    assert entry.floor == floor
    # held-out coverage with the recorded floor meets the level; lambda with the other floor does not fit
    assert 0.945 <= iv.coverage(mean[100:], std[100:], truth[100:], entry.lam, floor) <= 0.97
    assert iv.coverage(mean[100:], std[100:], truth[100:], entry.lam, 0.1) < 0.93
    iv.CalibrationTable("p", [entry]).save(tmp_path / "t.json")
    lam, rec = iv.choose_lambda(iv.CalibrationTable.load(tmp_path / "t.json"), "unet", "mri", 8.0)
    assert rec["calibrated"] and (lam, rec["floor"]) == (entry.lam, floor)
    old = {k: v for k, v in dataclasses.asdict(entry).items() if k != "floor"}
    assert iv.CalibrationEntry(**{**old, "method": "dds"}).floor == 0.1
    assert iv.choose_lambda(None, "unet", "mri", 8.0)[1]["floor"] == floor     # the fallback keeps the method's


def test_reconstruct_writes_the_unet_interval_with_its_floor(tmp_path):
    """`recon reconstruct --solver unet`: the line-bootstrap std and a 95% interval with the U-Net's floor, whose
    entry is looked up with the U-Net's weights (not the prior's)."""
    import h5py

    from priors.networks.fastmri_unet import Unet
    from recon.methods import MethodConfig
    from recon.pipeline.run import reconstruct_file
    from recon.pipeline.volume import ReconstructConfig
    from recon.problems.mri import MaskSpec

    torch.manual_seed(0)
    net = Unet(1, 1, chans=4, num_pool_layers=2).eval()
    src = _phantom_file(tmp_path / "p.h5")
    sampler = iv.sampler_settings(9, {"task": "unknown", "chans": 4, "num_pool_layers": 2, "replicates": 8,
                                      "keep": 0.75}, "rss", unet_sha256="u" * 64)
    table = iv.CalibrationTable("g", [iv.CalibrationEntry("unet", "mri", "R<=5", 3.0, 0.05, "crc", 40,
                                                          sampler=sampler, floor=iv.method_floor("unet"))])
    cfg = ReconstructConfig(solvers=["unet"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True,
                            weights={"mri": {"prior": "gaussian", "prior_sha256": "p" * 64, "unet_sha256": "u" * 64}})
    s = reconstruct_file(src, cfg, lambda m: MethodConfig(unet=net, progress=False, intervals=table), tmp_path / "o")
    rec = s["solvers"]["unet"]["interval"]
    assert rec["calibrated"] and rec["floor"] == iv.method_floor("unet") and rec["lambda"] == 3.0
    with h5py.File(tmp_path / "o" / "p.h5") as f:
        mean, std, hi = (f[f"solvers/unet/{k}"][()] for k in ("mean", "std", "upper_95"))
    assert float(std.max()) > 0
    assert np.allclose(hi - mean, 3.0 * iv.widened_std(mean, std, iv.method_floor("unet")), rtol=1e-4, atol=1e-7)
    # replicates are not posterior samples: the typicality statistic is the U-Net image's data misfit, not a score
    # norm (no threshold in this entry, so it is recorded and not judged)
    assert rec["prior_fit"]["threshold"] is None and rec["prior_fit"]["score_norm"] > 0


def test_an_entry_that_records_its_acquisition_holds_only_for_it():
    """The U-Net's entry has no prior to score its images, so it records the calibration's sampling-mask kind and
    coil count, and a run with another (equispaced against random: the U-Net's errors follow the mask) is flagged;
    the samplers' entries record neither and leave the mask kind to their typicality test (thresholds per kind)."""
    unet = iv.CalibrationEntry("unet", "mri", "R<=5", 2.4, 0.05, "crc", 40, floor=3.0, sampling="random")
    table = iv.CalibrationTable("p", [unet])
    assert iv.choose_lambda(table, "unet", "mri", 4.0, mask="random")[1]["calibrated"]
    lam, rec = iv.choose_lambda(table, "unet", "mri", 4.0, mask="equispaced")
    assert lam == 2.4 and not rec["calibrated"] and "equispaced sampling, the calibration's was random" in rec["reason"]
    table.entries[0] = dataclasses.replace(unet, coils=16)      # and the coil count: the U-Net's input is their RSS
    assert iv.choose_lambda(table, "unet", "mri", 4.0, mask="random", coils=16)[1]["calibrated"]
    rec = iv.choose_lambda(table, "unet", "mri", 4.0, mask="random", coils=8)[1]
    assert not rec["calibrated"] and "8 coils, the calibration's had 16" in rec["reason"]
    typical = {"max": 1.0, "level": 0.05, "n_images": 20, "sigmas": [0.02, 0.05], "data": ""}
    dds = dataclasses.replace(unet, method="dds", floor=0.1, typicality=typical, sampling=None)
    lam, rec = iv.choose_lambda(iv.CalibrationTable("p", [dds]), "dds", "mri", 4.0, score_norm=0.5,
                                score_sigmas=[0.02, 0.05], mask="equispaced")
    assert rec["calibrated"] and rec["prior_fit"]["typical"]


def test_the_command_line_finds_the_unet_entry_without_a_posterior_method(tmp_path):
    """`recon reconstruct --solver unet` loads no prior, but the U-Net's interval entry lives in the prior's table:
    the run must use it (here flagged or not by the data checks, but with the entry's lambda and floor)."""
    import json

    from recon.cli import main

    entry = iv.load_table("brain-mri-complex").lookup("unet", "mri", 3.0)
    if entry is None:
        pytest.skip("no U-Net entry in the bundled table")
    src = _phantom_file(tmp_path / "p.h5")
    assert main(["reconstruct", str(src), "--solver", "unet", "--mask", "random", "--accel", "3",
                 "--center-fraction", "0.2", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "o" / "p.json").read_text())["solvers"]["unet"]["interval"]
    assert (rec["lambda"], rec["floor"]) == (entry.lam, entry.floor) and "no calibration table" not in rec.get("reason", "")


def test_table_put_replaces_the_same_method_and_band_only():
    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 3.0, 0.05, "crc", 40),
                                      iv.CalibrationEntry("dds", "mri", "R>5", 3.5, 0.05, "crc", 40)])
    table.put(iv.CalibrationEntry("ccdf", "mri", "R<=5", 4.0, 0.05, "crc", 40))
    table.put(iv.CalibrationEntry("dds", "mri", "R>5", 3.7, 0.05, "crc", 40))
    assert [(e.method, e.band, e.lam) for e in table.entries] == [("dds", "R<=5", 3.0), ("ccdf", "R<=5", 4.0),
                                                                  ("dds", "R>5", 3.7)]


def _phantom_file(path):
    """A 4-coil fastMRI file of the pipeline tests' phantom, k-space noise std 0.002."""
    from recon.data.io import write_fastmri
    from recon.data.simulate import simulate_multicoil
    from tests.recon.pipeline.test_pipeline import _phantom

    k, _, _ = simulate_multicoil(torch.from_numpy(_phantom(5)[None]), n_coils=4, noise_std=0.002, seed=0)
    return write_fastmri(path, k)


def test_reconstruct_writes_calibrated_intervals_and_says_when_uncalibrated(tmp_path):
    import h5py
    import json

    from recon.methods import MethodConfig
    from recon.pipeline.run import reconstruct_file
    from recon.pipeline.volume import ReconstructConfig
    from recon.problems.mri import MaskSpec
    from tests.recon.pipeline.test_pipeline import N, _gaussian_prior

    src = _phantom_file(tmp_path / "p.h5")
    cfg = ReconstructConfig(solvers=["dds", "zero-filled"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True)
    table = iv.CalibrationTable("gaussian", [iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40)])
    for tbl, out in ((None, tmp_path / "a"), (table, tmp_path / "b")):
        settings = MethodConfig(prior=_gaussian_prior(), n_samples=4, nfe=10, progress=False, intervals=tbl)
        s = reconstruct_file(src, cfg, lambda m: settings, out)
        entry = s["solvers"]["dds"]
        assert entry["interval"]["calibrated"] is (tbl is not None)
        assert 0 < entry["coverage_95"] <= 1 and entry["mean_interval_width"] > 0
        assert "coverage_95" not in s["solvers"]["zero-filled"]
        with h5py.File(out / "p.h5") as f:
            lo, hi = f["solvers/dds/lower_95"][()], f["solvers/dds/upper_95"][()]
            mean, std = f["solvers/dds/mean"][()], f["solvers/dds/std"][()]
            assert lo.shape == mean.shape == (1, N, N) and (lo <= mean + 1e-6).all() and (hi >= mean - 1e-6).all()
            lam = entry["interval"]["lambda"]
            assert np.allclose(hi - mean, lam * iv.widened_std(mean, std), rtol=1e-4, atol=1e-7)
    assert lam == 2.5 and json.loads((out / "p.json").read_text())["solvers"]["dds"]["interval"]["band"] == "R<=5"


def test_an_entry_fitted_with_other_prior_weights_is_flagged_uncalibrated(tmp_path):
    """New weights under a prior's old name: the run's `weights` record reaches the interval, and an entry fitted
    with another sha256 is flagged (an entry that records none is not compared)."""
    from recon.methods import MethodConfig
    from recon.pipeline.run import reconstruct_file
    from recon.pipeline.volume import ReconstructConfig
    from recon.problems.mri import MaskSpec
    from tests.recon.pipeline.test_pipeline import _gaussian_prior

    src = _phantom_file(tmp_path / "p.h5")
    fitted, new = "a" * 64, "b" * 64
    table = iv.CalibrationTable("gaussian", [iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40,
                                                                 sampler={"prior_sha256": fitted,
                                                                          "posterior_below": 10.0})])
    settings = MethodConfig(prior=_gaussian_prior(), n_samples=2, nfe=6, progress=False, intervals=table)
    records = {}
    for sha in (fitted, new):
        cfg = ReconstructConfig(solvers=["dds"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True,
                                weights={"mri": {"prior": "gaussian", "prior_sha256": sha}})
        records[sha] = reconstruct_file(src, cfg, lambda m: settings, tmp_path / sha[0])["solvers"]["dds"]["interval"]
    assert records[fitted]["calibrated"]
    assert not records[new]["calibrated"] and f"prior_sha256 {fitted} there, {new} here" in records[new]["reason"]
    lam, rec = iv.choose_lambda(iv.CalibrationTable("g", [dataclasses.replace(table.entries[0], sampler={})]),
                                "dds", "mri", 4.0, sampler=iv.sampler_settings(50, {}, "rss", new))
    assert rec["calibrated"] and lam == 2.5


@pytest.mark.parametrize("prior,modality,split", [("brain-mri-complex", "mri", "BrainWeb [49, 50]"),
                                                   ("head-ct", "ct", "slices 72:84 (validation)")])
def test_the_bundled_tables_are_crc_fits_on_validation_slices(prior, modality, split):
    """The shipped tables (benchmarks/calibrate_intervals.py) are read by the pipeline's loader, name their data,
    and each entry's conformal-risk-control fit certifies alpha where it had enough slices: (n/(n+1)) risk +
    1/(n+1) <= alpha needs n >= 1/alpha - 1 = 19, so the validation coverage is at least 1 - alpha; with fewer
    (head CT's 12 validation slices) the entry certifies SMALL_SET_ALPHA and says so."""
    table = iv.load_table(prior)
    if table is None:
        pytest.skip(f"no calibration table bundled for {prior}")
    assert table.entries
    for e in table.entries:
        assert e.rule == "crc" and e.alpha == 0.05 and e.modality == modality
        certified = e.certified_alpha or e.alpha
        assert (e.certified_alpha is None) == iv.crc_feasible(e.n_images, e.alpha)
        assert iv.crc_feasible(e.n_images, certified)
        assert e.validation_coverage >= 1 - certified
        assert split in e.data                                    # validation data only
        assert iv.gaussian_lambda(e.alpha) < e.lam < 10          # wider than the Gaussian rule, still finite
        assert e.floor == iv.method_floor(e.method)
        if e.method == "unet":  # the line bootstrap's defaults and the bundled U-Net's weights
            from recon.baselines import unet as unet_base
            assert (e.sampler["replicates"], e.sampler["keep"]) == (unet_base.REPLICATES, unet_base.KEEP)
            assert e.sampler["nfe"] == 1 + unet_base.REPLICATES and e.sampler["magnitude"] == "rss"
            assert e.sampler["unet_sha256"] == weights_sha256("unet-brain-mri")
            # its typicality test is the data misfit's split-conformal limit over the same validation runs
            assert e.typicality["statistic"] == "data misfit" and e.typicality["n_images"] == e.n_images
            assert (e.sampling, e.coils) == ("random", 16)
            continue
        # fitted with `recon reconstruct` defaults: a changed default means the entry must be refitted
        assert e.sampler is not None and e.sampler["n_samples"] == 8
        assert e.sampler["nfe"] == solvers.get_method(e.method).default_nfe
        assert iv.settings_mismatch(e.method, e.sampler, solvers.hyper_parameters(e.method)) == {}
        assert e.modality != "mri" or e.sampler["magnitude"] == "rss"   # centred as `--magnitude` defaults
        assert e.sampler["prior_sha256"] == weights_sha256(prior)          # fitted with the bundled weights
    # the default acquisition has an entry: MRI 4x, CT as `recon reconstruct` simulates it by default
    band = iv.ct_band({"geometry": "parallel", **dataclasses.asdict(CTSpec())}) if modality == "ct" else None
    entry = table.lookup("dds", modality, 4.0, band)
    assert entry is not None and entry.band == (band or iv.accel_band(4.0))
    lam, record = iv.choose_lambda(table, "dds", modality, 4.0, rel_std=float(np.mean(entry.rel_std_range)), band=band)
    assert record["calibrated"] and lam == entry.lam


def test_a_ct_entry_serves_only_its_own_acquisition():
    spec = {"geometry": "parallel", "views": 60, "arc_degrees": 180.0, "I0": None}
    band = iv.ct_band(spec)
    assert band == "parallel, 60 views over 180 deg, noiseless"
    assert iv.ct_band({**spec, "I0": 1e4}) == "parallel, 60 views over 180 deg, I0 10000"
    assert iv.ct_band({"geometry": "fan", "views": 90}) == "fan, 90 views"      # a measured sinogram: dose unknown
    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "ct", band, 2.5, 0.05, "crc", 12, certified_alpha=0.1)])
    lam, record = iv.choose_lambda(table, "dds", "ct", None, band=band)
    assert record["calibrated"] and lam == 2.5 and "<= 0.1 " in record["guarantee"]
    for other in ({**spec, "views": 30}, {**spec, "arc_degrees": 120.0}, {**spec, "I0": 1e4}):
        lam, record = iv.choose_lambda(table, "dds", "ct", None, band=iv.ct_band(other))
        assert not record["calibrated"] and lam == 2.5 and "no calibration for dds at this setting" in record["reason"]


def test_calibration_fits_outputs_written_as_image_magnitude_on_the_rss_rule(tmp_path):
    from benchmarks.calibrate_intervals import as_rss
    from recon.problems.mri import noise_floor

    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 4, 8, 8), np.complex64))
    mean = np.random.default_rng(0).random((2, 8, 8))
    record = {"modality": "mri", "source": {"path": str(src)},
              "noise": [{"slice": 3, "noise_std": 0.1}, {"slice": 5, "noise_std": 0.2}]}
    out = as_rss(mean, record, [5, 3])
    b = np.array([0.2, 0.1])[:, None, None] * noise_floor(1.0, 4)      # each slice's own noise, 4 coils
    np.testing.assert_allclose(out, np.sqrt(mean**2 + b**2))
    assert as_rss(mean, {**record, "magnitude": {"rule": "rss"}}, [5, 3]) is mean
    assert as_rss(mean, {**record, "modality": "ct"}, [5, 3]) is mean


def test_choose_lambda_flags_sampler_settings_unlike_the_calibrations():
    fitted = iv.sampler_settings(50, {"eta": 1.0, "gamma_scale": 1.0, "n_samples": 8, "seed": 0, "sigma_y": 0.01})
    assert fitted == {"nfe": 50, "eta": 1.0, "gamma_scale": 1.0, "n_samples": 8}  # seed and sigma_y follow the run
    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 3.0, 0.05, "crc", 40, sampler=fitted)])
    lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0, sampler={**fitted, "seed": 3})
    assert lam == 3.0 and rec["calibrated"]
    for change, words in [({"nfe": 20}, "nfe 50 there, 20 here"), ({"n_samples": 4}, "n_samples 8 there, 4 here"),
                          ({"gamma_scale": 0.25}, "gamma_scale 1.0 there, 0.25 here"),
                          # not recorded in the entry: compared with its value before it existed (0.0), not
                          # with the sampler's default, which may have changed since
                          ({"posterior_below": 10.0}, "posterior_below 0.0 there, 10.0 here")]:
        lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0, sampler={**fitted, **change})
        assert lam == 3.0 and not rec["calibrated"] and words in rec["reason"]
    lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0, sampler={**fitted, "posterior_below": 0.0})
    assert rec["calibrated"]


def test_an_unrecorded_setting_is_its_value_before_it_existed_whatever_the_default(monkeypatch):
    import solvers
    fitted = {"nfe": 50, "eta": 1.0, "n_samples": 8}  # written before posterior_below existed
    real = solvers.hyper_parameters
    monkeypatch.setattr(solvers, "hyper_parameters", lambda m: {**real(m), "posterior_below": 10.0})
    assert iv.settings_mismatch("dds", fitted, {**fitted, "posterior_below": 10.0}) == {"posterior_below": (0.0, 10.0)}
    assert iv.settings_mismatch("dds", fitted, {**fitted, "posterior_below": 0.0}) == {}
    assert iv.settings_mismatch("dds", {**fitted, "posterior_below": 10.0}, {**fitted, "posterior_below": 10.0}) == {}


def test_choose_lambda_flags_an_interval_centred_by_another_magnitude_rule():
    fitted = iv.sampler_settings(50, {"eta": 1.0, "n_samples": 8}, "rss")
    assert fitted["magnitude"] == "rss"
    table = iv.CalibrationTable("p", [iv.CalibrationEntry("dds", "mri", "R<=5", 3.0, 0.05, "crc", 40, sampler=fitted)])
    hp = {"eta": 1.0, "n_samples": 8}
    _, rec = iv.choose_lambda(table, "dds", "mri", 4.0, sampler=iv.sampler_settings(50, hp, "rss"))
    assert rec["calibrated"]
    _, rec = iv.choose_lambda(table, "dds", "mri", 4.0, sampler=iv.sampler_settings(50, hp, "image"))
    assert not rec["calibrated"] and "magnitude rss there, image here" in rec["reason"]


def test_ct_intervals_are_in_hu_and_scored_over_the_tissue_not_the_air():
    """CT outputs are in HU: coverage and width count the head (air shifted to 0, as attenuation), not the pixels
    whose |HU| is large (air and bone), and the bounds come back in HU, unclipped."""
    from statistics import NormalDist

    from recon.pipeline.results import add_intervals
    from recon.pipeline.volume import MethodVolume, VolumeResult

    rng = np.random.default_rng(0)
    ref = np.full((4, 64, 64), -1000.0)
    yy, xx = np.mgrid[:64, :64]
    head = (yy - 32) ** 2 + (xx - 32) ** 2 < 24 ** 2
    ref[:, head] = 40.0
    ref[:, 30:34, 30:34] = 1500.0
    mean = ref.copy()
    mean[:, head] += rng.normal(0.0, 30.0, (4, int(head.sum())))    # errors 3x the reported std inside the head
    std = np.full(ref.shape, 10.0)
    result = VolumeResult("ct", "ct", [0, 1, 2, 3], ref, ("fbp", ref),
                          {"dds": MethodVolume(slices=[0, 1, 2, 3], means=list(mean), stds=list(std))}, {}, {})
    add_intervals(result, None)
    lo, hi, rec = result.intervals["dds"]
    half = 1.959964 * 11.0                                            # lam (std + 0.1 mean object std)
    expected = 2 * NormalDist().cdf(half / 30.0) - 1                  # 0.53; air and bone (exact) would give ~1
    assert not rec["calibrated"] and rec["coverage_95"] == pytest.approx(expected, abs=0.02)
    assert np.allclose(hi - lo, 2 * half) and np.allclose(lo[:, 0, 0], -1000.0 - half)


def test_typicality_threshold_flags_at_most_its_level_of_exchangeable_new_values():
    """Split-conformal outlier threshold: over repeated splits, a new in-distribution value exceeds the
    threshold of n = 19 values in at most 1/20 of the draws (exactly 1/20 in expectation for continuous data)."""
    rng = np.random.default_rng(0)
    draws = rng.lognormal(size=(4000, 20))
    flagged = np.mean([d[19] > iv.typicality_threshold(d[:19], 0.05) for d in draws])
    assert iv.typicality_threshold(np.arange(19.0), 0.05) == 18.0          # the 20th of 20 ranks: the maximum
    assert 0.04 <= flagged <= 0.06
    assert iv.typicality_threshold(np.arange(10.0), 0.05) == np.inf         # too few values for the level


def test_choose_lambda_flags_samples_the_prior_does_not_describe():
    entry = iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40,
                                typicality={"max": 0.4, "level": 0.05, "n_images": 20, "sigmas": [0.02, 0.05],
                                            "data": "validation"})
    table = iv.CalibrationTable("p", [entry])
    assert iv.choose_lambda(table, "dds", "mri", 4.0, score_norm=0.39)[1]["calibrated"]
    assert iv.choose_lambda(table, "dds", "mri", 4.0)[1]["calibrated"]      # no score: not tested
    lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0, score_norm=0.55)
    assert lam == 2.5 and not rec["calibrated"] and "score norm 0.550 > 0.400" in rec["reason"]
    assert rec["prior_fit"] == {"score_norm": 0.55, "threshold": 0.4, "typical": False}
    # a score taken at other noise levels than the threshold's is not compared with it: not tested, flagged
    lam, rec = iv.choose_lambda(table, "dds", "mri", 4.0, score_norm=0.39, score_sigmas=(0.01, 0.02))
    assert lam == 2.5 and not rec["calibrated"] and "fitted at noise levels [0.02, 0.05]" in rec["reason"]
    assert rec["prior_fit"] == {"score_norm": 0.39, "threshold": None, "typical": None, "sigmas": [0.01, 0.02]}
    assert iv.choose_lambda(table, "dds", "mri", 4.0, score_norm=0.39, score_sigmas=(0.02, 0.05))[1]["calibrated"]
    # a threshold of the run's mask kind, where the entry has one, replaces the entry's own
    entry.typicality["masks"] = {"equispaced": {"max": 0.45, "level": 0.05, "n_images": 20, "sigmas": [0.02, 0.05],
                                                "data": "validation, equispaced"}}
    for mask, calibrated in (("equispaced", True), ("random", False), (None, False)):
        rec = iv.choose_lambda(table, "dds", "mri", 4.0, score_norm=0.42, score_sigmas=(0.02, 0.05), mask=mask)[1]
        assert rec["calibrated"] is calibrated and rec["prior_fit"]["threshold"] == (0.45 if calibrated else 0.4)


def test_each_method_scores_its_samples_at_its_own_levels():
    """`sample_scores` takes the method's `typicality_sigmas` (ccdf: 0.01), one network evaluation per
    level; the value is `priors.typicality.score_norm` at those levels, in the prior's scale."""
    from priors.typicality import SIGMAS, score_norm
    from recon.methods import sample_scores, typicality_sigmas
    from solvers.posterior import Posterior
    from tests.recon.pipeline.test_pipeline import N, _gaussian_prior

    assert typicality_sigmas("dds") == SIGMAS == typicality_sigmas("score_ald")
    assert typicality_sigmas("ccdf") == (0.01,)
    prior = _gaussian_prior()
    samples = torch.randn(3, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    for method in ("dds", "ccdf"):
        post = Posterior.from_samples(samples * 2.0)
        post.method, post.hparams = method, {"scale": 2.0}
        before = prior.nfe
        got = sample_scores(post, prior)
        assert prior.nfe - before == len(typicality_sigmas(method))
        assert torch.allclose(got, score_norm(prior, samples, typicality_sigmas(method)))


def test_a_run_whose_samples_the_prior_does_not_describe_is_flagged_and_warned(tmp_path):
    """The pipeline scores the samples (`recon.methods.prior_fit`), records it, flags the interval and warns."""
    from recon.methods import MethodConfig
    from recon.pipeline.run import reconstruct_file
    from recon.pipeline.volume import ReconstructConfig
    from recon.problems.mri import MaskSpec
    from tests.recon.pipeline.test_pipeline import _gaussian_prior

    src = _phantom_file(tmp_path / "p.h5")
    cfg = ReconstructConfig(solvers=["dds"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True)
    records = {}
    for limit in (1e6, 1e-6):
        entry = iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40, data="phantoms",
                                    typicality={"max": limit, "level": 0.05, "n_images": 20, "sigmas": [0.02, 0.05],
                                                "data": "phantoms"})
        settings = MethodConfig(prior=_gaussian_prior(), n_samples=2, nfe=6, progress=False,
                                intervals=iv.CalibrationTable("gaussian", [entry]))
        records[limit] = reconstruct_file(src, cfg, lambda m: settings, tmp_path / str(limit))
    fit = records[1e6]["solvers"]["dds"]["interval"]["prior_fit"]
    assert fit["score_norm"] > 0 and len(fit["per_slice"]) == 1 and fit["threshold"] == 1e6
    assert records[1e6]["solvers"]["dds"]["interval"]["calibrated"] and "warnings" not in records[1e6]
    flagged = records[1e-6]
    assert not flagged["solvers"]["dds"]["interval"]["calibrated"]
    assert any("the prior describes these images poorly" in w for w in flagged["warnings"])


def test_the_figure_titles_an_uncalibrated_interval_so(tmp_path, monkeypatch):
    import matplotlib.axes

    from recon.pipeline.writers import write_panel

    titles: list[str] = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, *a, **k: titles.append(t))
    img = np.ones((4, 4))
    for calibrated in (True, False):
        write_panel(tmp_path / f"{calibrated}.png", img, img, {"dds": img}, img, "dds", "t",
                    interval_width=img, interval_calibrated=calibrated)
    assert "95% interval width dds" in titles and "95% interval width dds\n(uncalibrated)" in titles


def test_a_files_own_equispaced_sampling_picks_the_equispaced_threshold(tmp_path):
    """An undersampled file (its own mask) is recognised as equispaced (`MRIProblem.sampling`, JSON "sampling"),
    and the entry's equispaced threshold judges it; a random mask run keeps the entry's own threshold."""
    import h5py

    from recon.data.io import write_fastmri
    from recon.data.masks import make_mask
    from recon.methods import MethodConfig
    from recon.pipeline.run import reconstruct_file
    from recon.pipeline.volume import ReconstructConfig
    from recon.problems.mri import MaskSpec
    from tests.recon.pipeline.test_pipeline import _gaussian_prior

    src = _phantom_file(tmp_path / "p.h5")
    with h5py.File(src) as f:
        k = f["kspace"][()]
    lines = make_mask("equispaced", k.shape[-2:], 3, 0.2).mask.numpy()
    sub = write_fastmri(tmp_path / "sub.h5", k * lines)
    strict = {"max": 1e-6, "level": 0.05, "n_images": 20, "sigmas": [0.02, 0.05], "data": "random masks"}
    entry = iv.CalibrationEntry("dds", "mri", "R<=5", 2.5, 0.05, "crc", 40, data="phantoms",
                                typicality={**strict, "masks": {"equispaced": {**strict, "max": 1e6}}})
    settings = MethodConfig(prior=_gaussian_prior(), n_samples=2, nfe=6, progress=False,
                            intervals=iv.CalibrationTable("gaussian", [entry]))
    cfg = ReconstructConfig(solvers=["dds"], mask=MaskSpec("random", 3, 0.2, 0), quiet=True)
    own = reconstruct_file(sub, cfg, lambda m: settings, tmp_path / "own")
    assert own["mask"] == "file" and own["sampling"] == "equispaced"
    assert own["solvers"]["dds"]["interval"]["calibrated"]
    assert own["solvers"]["dds"]["interval"]["prior_fit"]["threshold"] == 1e6
    retro = reconstruct_file(src, cfg, lambda m: settings, tmp_path / "retro")
    assert retro["sampling"] == "random" and not retro["solvers"]["dds"]["interval"]["calibrated"]
