"""fastMRI-compatible evaluation of a directory of reconstructions (`recon evaluate`).

The rules are those of fastMRI's ``fastmri/evaluate.py``, so the numbers are the ones users already
report:

* prediction ``P/NAME.h5`` is compared with target ``T/NAME.h5``;
* the target is ``reconstruction_rss`` (challenge ``multicoil``) or ``reconstruction_esc`` (``singlecoil``);
  the prediction is the dataset ``reconstruction`` (float [slices, H, W], magnitude);
* both are centre-cropped to ``(W, W)`` with ``W`` = the target's last axis (a 320 x 320 target is kept
  whole; a 640 x 368 target becomes 368 x 368), top/left offset ``(size - W) // 2``;
* per volume: MSE, NMSE = ||gt - pred||^2 / ||gt||^2, PSNR and SSIM with ``data_range`` = the target
  volume's max, SSIM slice by slice (skimage, 7x7) averaged (``recon.metrics``);
* a set of volumes is summarised by the mean over volumes and the sample std (ddof = 1) across them
  (fastMRI prints mean +/- 2 std).

What we add: a prediction whose attribute ``slices`` (JSON list) says it covers only some slices is
compared with those target slices only; every method stored under ``solvers/NAME/mean`` (and the
top-level ``zero_filled``) is scored like ``reconstruction``; results are grouped by the target's
``acquisition`` attribute; and where a method stored a per-voxel ``std`` we report its mean (also divided
by the target volume max) and the coverage of the +/- 1.96 std interval (fraction of target pixels inside
it, over each slice's support ``target >= 5%`` of the slice maximum, the same statistic as
``recon benchmark``). A method that failed on some slices is scored on the slices it holds (group
attribute ``slices``, or its ``slices`` entry in the NAME.json beside the file).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from recon import metrics
from recon.pipeline import writers as outputs
from recon.benchmark import SUPPORT_FRACTION, Z95, coverage
from recon.pipeline.writers import atomic_path

RECONS_KEY = {"multicoil": "reconstruction_rss", "singlecoil": "reconstruction_esc"}
PRIMARY = "reconstruction"          # the dataset fastMRI evaluates
ALL = "ALL"                         # acquisition label of the rows over every volume
UNCERTAINTY = ("mean_std", "mean_std_rel", "coverage")


class EvaluationError(ValueError):
    """A prediction or target file that cannot be evaluated; the message names the file."""


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error over the volume."""
    return float(np.mean((np.asarray(gt, np.float64) - np.asarray(pred, np.float64)) ** 2))


# name -> f(target [slices, H, W], prediction [slices, H, W]) -> float, as fastMRI's METRIC_FUNCS
METRIC_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "MSE": mse, "NMSE": metrics.nmse, "PSNR": metrics.psnr, "SSIM": metrics.ssim,
}


def fastmri_crop(x: np.ndarray, size: int, what: str) -> np.ndarray:
    """Centre crop of the last two axes of `x` [..., H, W] to (size, size), as fastMRI's evaluate.py does.

    Raises EvaluationError (with `what` naming the array) when `x` is smaller than the crop.
    """
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise EvaluationError(f"{what} is {h} x {w}, smaller than the evaluation crop {size} x {size} "
                              f"(fastMRI crops to the target's width squared)")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top: top + size, left: left + size]


def volume_scores(target: np.ndarray, pred: np.ndarray, std: np.ndarray | None = None) -> dict[str, float | None]:
    """Every metric of METRIC_FUNCS, plus mean_std, mean_std_rel (mean_std / target volume max, comparable
    across volumes of different intensity scale) and coverage when `std` is given.

    target, pred, std: float [slices, H, W], already cropped and slice-matched.
    """
    out: dict[str, float | None] = {name: f(target, pred) for name, f in METRIC_FUNCS.items()}
    out["mean_std"], out["mean_std_rel"], out["coverage"] = None, None, None
    if std is not None:
        support = target >= SUPPORT_FRACTION * target.max(axis=(-2, -1), keepdims=True)
        out["mean_std"] = float(np.mean(std, dtype=np.float64))
        out["mean_std_rel"] = out["mean_std"] / float(target.max())
        out["coverage"] = coverage((pred - target)[support], std[support], Z95)
    return out


@dataclass
class VolumeRecord:
    """The scores of one method on one volume."""
    file: str
    acquisition: str
    method: str                       # "reconstruction" (what fastMRI scores) or a solver name
    solver: str                       # for "reconstruction": the method it holds (attribute `primary`), else = method
    slices: list[int]
    scores: dict[str, float | None] = field(default_factory=dict)


def _slice_list(raw: Any, n_target: int, where: str) -> list[int]:
    """A `slices` value (JSON text or an integer array) as target slice indices, each checked."""
    raw = raw.decode() if isinstance(raw, bytes) else raw
    idx = [int(i) for i in (json.loads(raw) if isinstance(raw, str) else np.atleast_1d(raw))]
    bad = [i for i in idx if not 0 <= i < n_target]
    if bad:
        raise EvaluationError(f"{where}: attribute slices names {bad}, outside the target's {n_target} slices")
    return idx


def _file_slices(f: h5py.File, n_target: int, path: Path) -> list[int]:
    """Target slices `reconstruction` covers: attribute `slices` (JSON list), else every slice."""
    if "n_slices_file" in f.attrs and int(f.attrs["n_slices_file"]) != n_target:
        raise EvaluationError(f"{path}: made from a file with {int(f.attrs['n_slices_file'])} slices, "
                              f"but the target has {n_target}")
    return _slice_list(f.attrs["slices"], n_target, str(path)) if "slices" in f.attrs else list(range(n_target))


def _method_slices(f: h5py.File, method: str, default: list[int], n_target: int, path: Path) -> list[int]:
    """Slices of `solvers/METHOD`: its group attribute `slices`, else the `slices` entry of the method in the
    NAME.json beside the file (written when a method failed on some slices), else `default`."""
    group = f.get(f"solvers/{method}")
    if group is not None and "slices" in group.attrs:
        return _slice_list(group.attrs["slices"], n_target, f"{path} solvers/{method}")
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            entry = json.loads(sidecar.read_text()).get("solvers", {}).get(method, {})
        except (json.JSONDecodeError, AttributeError):
            entry = {}
        if isinstance(entry, dict) and entry.get("slices") is not None:
            return _slice_list(json.dumps(entry["slices"]), n_target, str(sidecar))
    return default


def _attr(f: h5py.File, name: str, default: str) -> str:
    v = f.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _primary(f: h5py.File) -> str:
    """The method `reconstruction` holds: attribute `primary` (else `solver`, else "")."""
    return _attr(f, "primary", _attr(f, "solver", ""))


def _predictions(f: h5py.File) -> dict[str, tuple[str, str | None]]:
    """method -> (dataset path of its magnitude mean, dataset path of its std or None)."""
    primary = _primary(f)
    std_of = (lambda m: f"solvers/{m}/std" if f"solvers/{m}/std" in f else None)
    out: dict[str, tuple[str, str | None]] = {PRIMARY: (PRIMARY, std_of(primary) if primary else None)}
    if "solvers" in f:
        for m in f["solvers"]:
            if "mean" in f["solvers"][m]:
                out[m] = (f"solvers/{m}/mean", std_of(m))
    if "zero_filled" in f and "zero-filled" not in out:
        out["zero-filled"] = ("zero_filled", None)
    return out


def evaluate_file(target_path: Path, prediction_path: Path, challenge: str = "auto") -> list[VolumeRecord]:
    """Score `reconstruction` and every stored method of one prediction file against its target file."""
    with h5py.File(target_path, "r") as t:
        key = _target_key(t, challenge, target_path)
        target = np.asarray(t[key][()])
        acquisition = _attr(t, "acquisition", "unknown")
    if target.ndim != 3:
        raise EvaluationError(f"{target_path}: {key} must be [slices, H, W], got shape {target.shape}")
    size = target.shape[-1]
    records: list[VolumeRecord] = []
    with h5py.File(prediction_path, "r") as f:
        if PRIMARY not in f:
            raise EvaluationError(f"{prediction_path}: no dataset '{PRIMARY}' (fastMRI's prediction format: "
                                  f"float32 [slices, H, W]); rerun `recon reconstruct` with this version")
        file_idx = _file_slices(f, target.shape[0], prediction_path)
        primary = _primary(f) or PRIMARY
        for method, (mean_key, std_key) in _predictions(f).items():
            idx = file_idx if method == PRIMARY else _method_slices(f, method, file_idx, target.shape[0],
                                                                    prediction_path)
            if mean_key == "zero_filled" and f[mean_key].shape[0] != len(idx):
                continue                      # the top-level extra covers other slices: not comparable
            gt = fastmri_crop(target[idx], size, f"{target_path} {key}")
            pred = fastmri_crop(_read(f, mean_key, len(idx), prediction_path), size, f"{prediction_path} {mean_key}")
            std = None
            if std_key is not None:
                std = fastmri_crop(_read(f, std_key, len(idx), prediction_path), size, f"{prediction_path} {std_key}")
            if pred.shape != gt.shape:
                raise EvaluationError(f"{prediction_path}: {mean_key} cropped to {pred.shape} but the target "
                                      f"{target_path} {key} (slices {_short(idx)}) cropped to {gt.shape}")
            records.append(VolumeRecord(prediction_path.name, acquisition, method,
                                        primary if method == PRIMARY else method, idx,
                                        volume_scores(gt, pred, std)))
    return records


def _target_key(t: h5py.File, challenge: str, path: Path) -> str:
    keys = list(RECONS_KEY.values()) if challenge == "auto" else [RECONS_KEY[challenge]]
    for k in keys:
        if k in t:
            return k
    raise EvaluationError(f"{path}: no target dataset {' or '.join(keys)} (a fully sampled fastMRI file "
                          f"holds reconstruction_rss for multicoil, reconstruction_esc for singlecoil)")


def _read(f: h5py.File, key: str, n_slices: int, path: Path) -> np.ndarray:
    x = np.asarray(f[key][()])
    if np.iscomplexobj(x):
        x = np.abs(x)
    if x.ndim != 3 or x.shape[0] != n_slices:
        raise EvaluationError(f"{path}: {key} has shape {x.shape}, expected [{n_slices}, H, W] "
                              f"(one image per target slice it covers)")
    return x


def _short(idx: list[int]) -> str:
    return f"{idx[0]}..{idx[-1]}" if len(idx) > 3 else str(idx)


@dataclass
class Evaluation:
    """All volume records, the summary rows, and what could not be paired."""
    target_path: str
    predictions_path: str
    challenge: str
    acquisition: str | None
    volumes: list[VolumeRecord]
    summary: list[dict[str, Any]]
    targets_without_prediction: list[str]


def evaluate_directory(target_dir: Path, predictions_dir: Path, challenge: str = "auto",
                       acquisition: str | None = None) -> Evaluation:
    """Evaluate every ``*.h5`` prediction in `predictions_dir` against the same name in `target_dir`.

    A prediction without a target is an error (naming it); targets without a prediction are listed in
    `targets_without_prediction` (fastMRI's evaluate.py would stop on them). With `acquisition`, only
    volumes whose target has that ``acquisition`` attribute count.
    """
    target_dir, predictions_dir = Path(target_dir), Path(predictions_dir)
    for d, what in ((target_dir, "target path"), (predictions_dir, "predictions path")):
        if not d.is_dir():
            raise EvaluationError(f"{what} {d} is not a directory")
    preds = sorted(p for p in predictions_dir.glob("*.h5") if not p.name.startswith("."))
    if not preds:
        raise EvaluationError(f"{predictions_dir}: no .h5 prediction files")
    records: list[VolumeRecord] = []
    for p in preds:
        t = target_dir / p.name
        if not t.exists():
            raise EvaluationError(f"{p}: no target file {t}")
        if acquisition is not None:
            with h5py.File(t, "r") as tf:
                if _attr(tf, "acquisition", "unknown") != acquisition:
                    continue
        records.extend(evaluate_file(t, p, challenge))
    names = {p.name for p in preds}
    missing = sorted(t.name for t in target_dir.glob("*.h5") if t.name not in names and not t.name.startswith("."))
    if acquisition is not None and not records:
        raise EvaluationError(f"no prediction in {predictions_dir} has a target of acquisition {acquisition}")
    return Evaluation(str(target_dir), str(predictions_dir), challenge, acquisition, records,
                      summarise(records), missing)


def summarise(records: list[VolumeRecord]) -> list[dict[str, Any]]:
    """One row per (acquisition, method), plus (ALL, method) rows when there are several acquisitions.

    Each metric: mean over volumes and `NAME_std` = sample std across volumes (None for one volume).
    UNCERTAINTY entries: mean over the volumes that have a std.
    """
    acqs = sorted({r.acquisition for r in records})
    methods = list(dict.fromkeys(r.method for r in records))
    rows = []
    for acq in acqs + ([ALL] if len(acqs) > 1 else []):
        for m in methods:
            rs = [r for r in records if r.method == m and (acq == ALL or r.acquisition == acq)]
            if not rs:
                continue
            row: dict[str, Any] = {"acquisition": acq, "method": m,
                                   "solver": ",".join(sorted({r.solver for r in rs})),
                                   "volumes": len(rs), "slices": sum(len(r.slices) for r in rs)}
            for name in (*METRIC_FUNCS, *UNCERTAINTY):
                vals = [r.scores[name] for r in rs if r.scores.get(name) is not None]
                row[name] = float(np.mean(vals)) if vals else None
                if name in METRIC_FUNCS:
                    row[f"{name}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            rows.append(row)
    return rows


def format_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table (metric columns: mean +/- 2 std across volumes)."""
    head = ["acquisition", "method", "volumes", "slices", "PSNR dB", "SSIM", "NMSE", "mean std", "std/max",
            "coverage"]

    def pm(row: dict[str, Any], name: str, fmt: str) -> str:
        s = row.get(f"{name}_std")
        return format(row[name], fmt) + ("" if s is None else " ± " + format(2 * s, fmt))

    body = [[r["acquisition"], r["method"] if r["method"] != PRIMARY else f"{PRIMARY} ({r['solver']})",
             str(r["volumes"]), str(r["slices"]), pm(r, "PSNR", ".2f"), pm(r, "SSIM", ".4f"), pm(r, "NMSE", ".4g"),
             "–" if r["mean_std"] is None else format(r["mean_std"], ".4g"),
             "–" if r["mean_std_rel"] is None else format(r["mean_std_rel"], ".2%"),
             "–" if r["coverage"] is None else format(r["coverage"], ".3f")] for r in summary]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    note = ("mean over volumes ± 2 x their std (as fastmri.evaluate prints); posterior std: its mean, relative "
            "to the target max, coverage of ±1.96 std")
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body), note])


def to_json(ev: Evaluation) -> dict[str, Any]:
    """A JSON-ready dict: settings, the evaluation rule, summary rows and every volume record."""
    d = asdict(ev)
    d["rule"] = ("fastmri.evaluate: center crop to (W, W), W = target width; PSNR/SSIM data_range = target "
                 "volume max; SSIM 7x7 per slice averaged; summary = mean over volumes, *_std = sample std")
    d["volumes"] = [{k: v for k, v in asdict(r).items() if k != "scores"} | r.scores for r in ev.volumes]
    return d


def write_json(path: Path, ev: Evaluation) -> None:
    """`to_json(ev)` to `path`, atomically; NaN/inf become null."""
    outputs.write_json(Path(path), to_json(ev))


CSV_COLUMNS = ["acquisition", "method", "solver", "volumes", "slices", "MSE", "MSE_std", "NMSE", "NMSE_std",
               "PSNR", "PSNR_std", "SSIM", "SSIM_std", "mean_std", "mean_std_rel", "coverage"]


def write_csv(path: Path, summary: list[dict[str, Any]]) -> None:
    """The summary rows (CSV_COLUMNS; empty cell for None), atomically."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for row in summary:
                w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})
