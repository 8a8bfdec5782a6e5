"""`recon evaluate`: fastMRI's evaluation rule on a directory, checked against numbers computed here
with numpy/skimage, against upstream `fastmri.evaluate` when it is installed, and the prediction
contract of `recon reconstruct` outputs (dataset `reconstruction`, float32 [slices, rH, rW])."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from recon.cli import main as cli
from recon.evaluate import ALL, PRIMARY, EvaluationError, evaluate_directory, evaluate_file
from tests.conftest import upstream_fastmri

# (name, acquisition, target shape): one non-square target with an odd margin (41 x 32 -> rows 4..35, as
# fastMRI crops: offset (41 - 32) // 2)
VOLUMES = [("a.h5", "AXT1", (3, 41, 32)), ("b.h5", "AXT1", (2, 32, 32)), ("c.h5", "AXT2", (2, 36, 36))]
NOISE = {"dds": 0.03, "sense": 0.08}     # per-method noise std relative to the volume max


def _target(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A smooth positive image volume with a dark border (support below 5% of the max outside)."""
    s, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / (h / 2.5), (xx - w / 2) / (w / 2.5))
    g = np.random.default_rng(seed)
    vol = [(r < 1) * (1.0 + 0.4 * np.cos(xx / (3 + i)) + 0.1 * g.standard_normal((h, w))) for i in range(s)]
    return (100 * np.clip(np.stack(vol), 0, None)).astype(np.float32)


def _write_target(path: Path, vol: np.ndarray, acquisition: str) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("reconstruction_rss", data=vol)
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(vol.max())


def _write_prediction(path: Path, preds: dict[str, np.ndarray], stds: dict[str, np.ndarray], primary: str,
                      attrs: dict | None = None) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(PRIMARY, data=preds[primary].astype(np.float32))
        for m, p in preds.items():
            f.create_dataset(f"solvers/{m}/mean", data=p.astype(np.float32))
            if m in stds:
                f.create_dataset(f"solvers/{m}/std", data=stds[m].astype(np.float32))
        f.attrs["primary"] = primary
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def _noisy(vol: np.ndarray, rel: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """vol + N(0, (rel * max)^2) and the matching constant std map (a calibrated Gaussian posterior)."""
    sd = rel * float(vol.max())
    noise = np.random.default_rng(seed).normal(0, sd, vol.shape)
    return (vol + noise).astype(np.float32), np.full(vol.shape, sd, np.float32)


@pytest.fixture()
def dirs(tmp_path) -> tuple[Path, Path, dict]:
    """Targets T/*.h5 and predictions P/*.h5 (primary dds, plus sense without std); returns the arrays."""
    t, p = tmp_path / "targets", tmp_path / "preds"
    t.mkdir(), p.mkdir()
    data = {}
    for i, (name, acq, shape) in enumerate(VOLUMES):
        vol = _target(shape, i)
        _write_target(t / name, vol, acq)
        preds, stds = {}, {}
        for j, (m, rel) in enumerate(NOISE.items()):
            preds[m], sd = _noisy(vol, rel, 10 * i + j)
            if m == "dds":
                stds[m] = sd
        _write_prediction(p / name, preds, stds, "dds")
        data[name] = (acq, vol, preds, stds)
    return t, p, data


# --- the independent computation: plain numpy / skimage, written from fastMRI's definitions ---------

def _crop(x: np.ndarray, n: int) -> np.ndarray:
    top, left = (x.shape[-2] - n) // 2, (x.shape[-1] - n) // 2
    return x[..., top:top + n, left:left + n].astype(np.float64)


def _expected(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    n = gt.shape[-1]
    g, q = _crop(gt, n), _crop(pred, n)
    m = float(((g - q) ** 2).mean())
    return {"MSE": m, "NMSE": float(((g - q) ** 2).sum() / (g ** 2).sum()),
            "PSNR": float(10 * np.log10(g.max() ** 2 / m)),
            "SSIM": float(np.mean([structural_similarity(g[i], q[i], data_range=g.max()) for i in range(len(g))]))}


def _row(summary: list[dict], acq: str, method: str) -> dict:
    (row,) = [r for r in summary if r["acquisition"] == acq and r["method"] == method]
    return row


def test_summary_rows_equal_numpy_skimage_means_per_acquisition(dirs):
    t, p, data = dirs
    ev = evaluate_directory(t, p, "multicoil")
    for acq in ("AXT1", "AXT2", ALL):
        names = [n for n, (a, *_) in data.items() if acq in (a, ALL)]
        for method, key in ((PRIMARY, "dds"), ("dds", "dds"), ("sense", "sense")):
            per_vol = [_expected(data[n][1], data[n][2][key]) for n in names]
            row = _row(ev.summary, acq, method)
            assert row["volumes"] == len(names)
            assert row["slices"] == sum(data[n][1].shape[0] for n in names)
            for metric in ("MSE", "NMSE", "PSNR", "SSIM"):
                vals = [v[metric] for v in per_vol]
                # both sides in float64 from the same float32 arrays: agreement to rounding
                assert row[metric] == pytest.approx(np.mean(vals), rel=1e-9), (acq, method, metric)
                if len(vals) > 1:
                    assert row[f"{metric}_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-6)
    # the primary row names the method it holds; sense (3 x the noise of dds) scores ~9.5 dB lower
    assert _row(ev.summary, ALL, PRIMARY)["solver"] == "dds"
    gap = _row(ev.summary, ALL, "dds")["PSNR"] - _row(ev.summary, ALL, "sense")["PSNR"]
    assert gap == pytest.approx(20 * np.log10(NOISE["sense"] / NOISE["dds"]), abs=0.3)


def test_uncertainty_mean_std_and_coverage(dirs):
    t, p, data = dirs
    ev = evaluate_directory(t, p)
    for r in ev.volumes:
        acq, vol, preds, stds = data[r.file]
        if r.method == "sense":            # no std stored: no uncertainty numbers
            assert r.scores["mean_std"] is None and r.scores["coverage"] is None and r.scores["mean_std_rel"] is None
            continue
        n = vol.shape[-1]
        g, q, s = _crop(vol, n), _crop(preds["dds"], n), _crop(stds["dds"], n)
        support = g >= 0.05 * g.max(axis=(1, 2), keepdims=True)
        assert r.scores["mean_std"] == pytest.approx(s.mean(), rel=1e-6)
        assert r.scores["mean_std_rel"] == pytest.approx(s.mean() / g.max(), rel=1e-6)   # = NOISE["dds"]
        assert r.scores["coverage"] == pytest.approx(np.mean(np.abs(q - g)[support] <= 1.96 * s[support]), abs=1e-12)
    # a calibrated Gaussian std: 95% of errors inside +/- 1.96 std (binomial sd ~0.3% over ~5000 pixels)
    assert _row(ev.summary, ALL, "dds")["coverage"] == pytest.approx(0.95, abs=0.015)


def test_range_file_is_scored_on_the_slices_it_names(tmp_path):
    t, p = tmp_path / "t", tmp_path / "p"
    t.mkdir(), p.mkdir()
    vol = _target((4, 32, 32), 7)
    vol[0] *= 3                        # a bright slice outside the range: must not set the data range
    _write_target(t / "v.h5", vol, "AXT2")
    pred, _ = _noisy(vol[1:3], 0.05, 1)
    _write_prediction(p / "v.h5", {"dds": pred}, {}, "dds", {"slices": json.dumps([1, 2]), "n_slices_file": 4})
    (rec, _) = [r for r in evaluate_file(t / "v.h5", p / "v.h5") if r.method in (PRIMARY, "dds")]
    assert rec.slices == [1, 2]
    exp = _expected(vol[1:3], pred)
    for metric in ("MSE", "NMSE", "PSNR", "SSIM"):
        assert rec.scores[metric] == pytest.approx(exp[metric], rel=1e-9)
    # the same file claiming every slice is a shape error that names it
    _write_prediction(p / "v.h5", {"dds": pred}, {}, "dds")
    with pytest.raises(EvaluationError, match=r"v\.h5.*\[4, H, W\]"):
        evaluate_file(t / "v.h5", p / "v.h5")


@pytest.mark.parametrize("via", ["sidecar_json", "group_attribute"])
def test_a_method_with_failed_slices_is_scored_on_the_slices_it_has(tmp_path, via):
    # file slices [0, 1, 2]; sense failed on slice 1: solvers/sense/mean holds slices [0, 2]
    t, p = tmp_path / "t", tmp_path / "p"
    t.mkdir(), p.mkdir()
    vol = _target((3, 32, 32), 5)
    _write_target(t / "v.h5", vol, "AXT1")
    dds, _ = _noisy(vol, 0.03, 1)
    sense, _ = _noisy(vol[[0, 2]], 0.08, 2)
    _write_prediction(p / "v.h5", {"dds": dds, "sense": sense}, {}, "dds",
                      {"slices": json.dumps([0, 1, 2]), "n_slices_file": 3})
    if via == "sidecar_json":
        (p / "v.json").write_text(json.dumps({"solvers": {"dds": {}, "sense": {"slices": [0, 2]}}}))
    else:
        with h5py.File(p / "v.h5", "a") as f:
            f["solvers/sense"].attrs["slices"] = json.dumps([0, 2])
    recs = {r.method: r for r in evaluate_file(t / "v.h5", p / "v.h5")}
    assert recs["sense"].slices == [0, 2] and recs["dds"].slices == [0, 1, 2]
    assert recs["sense"].scores["PSNR"] == pytest.approx(_expected(vol[[0, 2]], sense)["PSNR"], rel=1e-9)
    assert recs["dds"].scores["SSIM"] == pytest.approx(_expected(vol, dds)["SSIM"], rel=1e-9)


@pytest.mark.parametrize("case, message", [
    pytest.param("no_target", r"no target file .*/targets/orphan\.h5", id="no_target"),
    pytest.param("too_small", r"preds/a\.h5 reconstruction is 16 x 16, smaller than the evaluation crop 32 x 32",
                 id="too_small"),
    pytest.param("no_reconstruction", r"preds/a\.h5: no dataset 'reconstruction'", id="no_reconstruction"),
    pytest.param("slice_out_of_range", r"preds/a\.h5: attribute slices names \[5\]", id="slice_out_of_range"),
    pytest.param("no_target_key", r"targets/a\.h5: no target dataset reconstruction_esc", id="no_target_key"),
])
def test_errors_name_the_file(dirs, case, message):
    t, p, data = dirs
    vol = data["a.h5"][1]
    challenge = "auto"
    if case == "no_target":
        _write_prediction(p / "orphan.h5", {"dds": vol}, {}, "dds")
    elif case == "too_small":
        _write_prediction(p / "a.h5", {"dds": vol[:, :16, :16]}, {}, "dds")
    elif case == "no_reconstruction":
        with h5py.File(p / "a.h5", "a") as f:
            del f[PRIMARY]
    elif case == "slice_out_of_range":
        _write_prediction(p / "a.h5", {"dds": vol[:1]}, {}, "dds", {"slices": json.dumps([5])})
    else:
        challenge = "singlecoil"
    with pytest.raises(EvaluationError, match=message):
        evaluate_directory(t, p, challenge)


def test_cli_prints_table_and_writes_json_and_csv(dirs, capsys):
    t, p, data = dirs
    (t / "extra.h5").write_bytes((t / "b.h5").read_bytes())     # a target nobody predicted
    rc = cli(["evaluate", "--target-path", str(t), "--predictions-path", str(p), "--acquisition", "AXT1"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "reconstruction (dds)" in out and "AXT2" not in out
    assert "1 target file(s) have no prediction" in err
    js = json.loads((p / "evaluation.json").read_text())
    assert js["targets_without_prediction"] == ["extra.h5"]
    assert {v["file"] for v in js["volumes"]} == {"a.h5", "b.h5"}
    rows = list(csv.DictReader((p / "evaluation.csv").open()))
    psnr = {r["method"]: float(r["PSNR"]) for r in rows}
    exp = np.mean([_expected(data[n][1], data[n][2]["dds"])["PSNR"] for n in ("a.h5", "b.h5")])
    assert psnr[PRIMARY] == pytest.approx(exp, rel=1e-9) and psnr["dds"] == psnr[PRIMARY]
    assert f"{exp:.2f}" in out
    assert not list(p.glob(".*"))                                # atomic writes leave no temporaries


def test_cli_error_exit_1_names_the_file(dirs, capsys):
    t, p, _ = dirs
    (t / "b.h5").unlink()
    rc = cli(["evaluate", "--target-path", str(t), "--predictions-path", str(p)])
    assert rc == 1 and str(p / "b.h5") in capsys.readouterr().err


# --- upstream fastmri.evaluate ------------------------------------------------------------------------

def _upstream_evaluate(monkeypatch):
    """fastmri.evaluate as installed (`pip install --no-deps fastmri runstats`), or skip."""
    pytest.importorskip("runstats")
    return upstream_fastmri("fastmri.evaluate", monkeypatch)


def test_same_numbers_as_upstream_fastmri_evaluate(dirs, monkeypatch):
    t, p, _ = dirs
    upstream = _upstream_evaluate(monkeypatch)
    ours = evaluate_directory(t, p, "multicoil")
    for acq, label in ((None, ALL), ("AXT1", "AXT1")):
        args = argparse.Namespace(target_path=t, predictions_path=p, acquisition=acq, acceleration=None)
        m = upstream.evaluate(args, "reconstruction_rss")
        # fastmri 0.3.0's ssim() returns a 1-element array: squeeze every value to a float
        means = {k: float(np.squeeze(v)) for k, v in m.means().items()}
        stds = {k: float(np.squeeze(v)) for k, v in m.stddevs().items()}
        row = _row(ours.summary, label, PRIMARY)
        # upstream computes in float32 where skimage keeps float32 inputs; we compute in float64
        assert row["PSNR"] == pytest.approx(means["PSNR"], abs=1e-4)
        assert row["SSIM"] == pytest.approx(means["SSIM"], abs=1e-5)
        assert row["NMSE"] == pytest.approx(means["NMSE"], rel=1e-4)
        assert row["MSE"] == pytest.approx(means["MSE"], rel=1e-4)
        assert row["PSNR_std"] == pytest.approx(stds["PSNR"], abs=1e-4)


# --- the contract of `recon reconstruct` outputs ------------------------------------------------------

@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-slice synthetic fastMRI file (recon size 52 x 48 of a 56 x 48 k-space) and its reconstruction
    with --solver zero-filled,sense."""
    from recon.data.io import write_fastmri
    from recon.data.simulate import simulate_multicoil

    root = tmp_path_factory.mktemp("contract")
    vol = _target((3, 56, 48), 3) / 100
    k, _, _ = simulate_multicoil(torch.from_numpy(vol), n_coils=4, noise_std=0.001, seed=0)
    write_fastmri(root / "in" / "vol.h5", k, recon_size=(52, 48), attrs={"acquisition": "AXT1"})
    rc = cli(["reconstruct", str(root / "in"), "--out", str(root / "out"), "--solver", "zero-filled,sense",
              "--accel", "3", "--center-fraction", "0.25", "--quiet"])
    assert rc == 0
    return root / "in", root / "out"


def test_reconstruct_output_meets_fastmri_prediction_contract(reconstructed):
    src, out = reconstructed
    with h5py.File(src / "vol.h5") as t:
        target = t["reconstruction_rss"][()]
    with h5py.File(out / "vol.h5") as f:
        rec = f[PRIMARY]
        assert rec.dtype == np.float32 and rec.shape == target.shape == (3, 52, 48)
        # the first --solver method, stored under its name too; a magnitude
        assert f.attrs["primary"] == "zero-filled"
        np.testing.assert_array_equal(rec[()], f["solvers/zero-filled/mean"][()].astype(np.float32))
        assert (rec[()] >= 0).all()
        assert json.loads(f.attrs["slices"]) == [0, 1, 2] and int(f.attrs["n_slices_file"]) == 3
    ev = evaluate_directory(src, out, "multicoil")
    assert {r.method for r in ev.volumes} >= {PRIMARY, "zero-filled", "sense"}
    # SENSE at R=3 with 25% calibration beats zero-filling on a smooth phantom
    assert _row(ev.summary, "AXT1", "sense")["PSNR"] > _row(ev.summary, "AXT1", PRIMARY)["PSNR"]


def test_reconstruct_slice_range_is_marked_and_honoured(reconstructed, tmp_path):
    src, _ = reconstructed
    out = tmp_path / "out"
    rc = cli(["reconstruct", str(src), "--out", str(out), "--solver", "zero-filled,sense", "--primary", "sense",
              "--slices", "1:3", "--accel", "3", "--center-fraction", "0.25", "--quiet"])
    assert rc == 0
    with h5py.File(out / "vol.h5") as f:
        assert f[PRIMARY].shape == (2, 52, 48) and f.attrs["primary"] == "sense"
        np.testing.assert_array_equal(f[PRIMARY][()], f["solvers/sense/mean"][()].astype(np.float32))
        assert json.loads(f.attrs["slices"]) == [1, 2] and int(f.attrs["n_slices_file"]) == 3
        pred = f[PRIMARY][()]
    with h5py.File(src / "vol.h5") as t:
        exp = _expected(t["reconstruction_rss"][1:3], pred)
    (rec,) = [r for r in evaluate_directory(src, out).volumes if r.method == PRIMARY]
    assert rec.slices == [1, 2] and rec.scores["PSNR"] == pytest.approx(exp["PSNR"], rel=1e-9)


def test_upstream_fastmri_evaluate_reads_a_reconstruct_output_directory(reconstructed, tmp_path, monkeypatch):
    src, out = reconstructed
    upstream = _upstream_evaluate(monkeypatch)
    args = argparse.Namespace(target_path=src, predictions_path=out, acquisition=None, acceleration=None)
    psnr = float(np.squeeze(upstream.evaluate(args, "reconstruction_rss").means()["PSNR"]))
    assert cli(["evaluate", "--target-path", str(src), "--predictions-path", str(out),
                "--json", str(tmp_path / "ev.json"), "--csv", str(tmp_path / "ev.csv")]) == 0
    ours = _row(json.loads((tmp_path / "ev.json").read_text())["summary"], "AXT1", PRIMARY)
    assert ours["PSNR"] == pytest.approx(psnr, abs=0.01)     # the bar; measured: ~1e-9 dB
