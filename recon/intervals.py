"""Calibrated per-pixel intervals from a posterior's mean and std, with a distribution-free guarantee.

The interval of a pixel is ``[m - lam * s, m + lam * s]`` on the magnitude (MRI, lower end clipped at 0)
or on the values (CT), where ``m`` is the posterior mean, ``s = std + floor * mean_object_std`` (the
floor keeps pixels whose samples agree from getting a zero-width interval; `solvers.posterior.widened_std`;
0.1 for the samplers, `METHOD_FLOORS` for methods whose spread is not a posterior's), and ``lam`` is fitted on
validation data. The loss of an image is the fraction of its object pixels outside their interval,
``L_i(lam)``, non-increasing in ``lam`` and bounded by 1.

Two ways to pick ``lam`` from n calibration images (slices):

* **Conformal risk control** (Angelopoulos, Bates, Fisch, Lei & Schuster, "Conformal risk control", 2022):
  ``lam = inf{lam : n/(n+1) * mean_i L_i(lam) + 1/(n+1) <= alpha}``; on a new exchangeable image the
  *expected* fraction of uncovered object pixels is <= alpha. This is the default: it works with the tens
  of validation slices we have. It can certify a level only when ``1/(n+1) <= alpha`` (n >= 19 for 0.05);
  with fewer images (head CT has 12 validation slices) `fit_entry` certifies `SMALL_SET_ALPHA` instead: the
  interval keeps its nominal alpha (it is the "95%" interval) but its lambda is the CRC lambda at 0.10 (on 12
  images: at most 2.5 % of the calibration pixels uncovered), and the entry and every output say that the
  guarantee is 90 % expected coverage, not 95 %.
* **RCPS** (Bates, Angelopoulos, Lei, Malik & Jordan, "Distribution-free, risk-controlling prediction sets",
  2021; applied to image-to-image regression by Angelopoulos et al., ICML 2022): the smallest ``lam`` whose
  Hoeffding upper confidence bound ``mean_i L_i(lam) + sqrt(log(1/delta) / (2n))`` stays below alpha; with
  probability >= 1 - delta over the calibration set the risk is <= alpha. It needs n >~ log(1/delta) /
  (2 alpha^2) images (about 460 for alpha = 0.05, delta = 0.1) before it is feasible; with fewer it returns
  None and the table records that.

Tables are JSON files beside each prior (``priors/weights/NAME.calibration.json``): one entry per method
and setting (modality, acceleration band), with the data it was fitted on and the sampler settings it was fitted
with (NFE, number of samples, the method's hyper-parameters): a run with other settings has another spread, so its
interval is flagged uncalibrated.

Data unlike the calibration set. Exchangeability is what the guarantee rests on, so a run on other data is
flagged uncalibrated when either test says so: its `relative_std` lies outside half to twice the calibration
range, or the prior describes its samples worse than it describes validation images of the setting
(`typicality_threshold`: a conformal outlier test on the multiscale score norm, `priors.typicality`; on
exchangeable in-distribution data it flags at most a fraction ``typicality.level`` of the runs).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from solvers import posterior

LAMBDA_GRID = np.round(np.arange(0.0, 30.0 + 1e-9, 0.01), 2)
#: the risk level certified instead of alpha when the calibration set is too small for alpha (`fit_entry`)
SMALL_SET_ALPHA = 0.10
ACCEL_BANDS = ((0.0, 5.0, "R<=5"), (5.0, 1e9, "R>5"))


def accel_band(acceleration: float | None) -> str:
    """The acceleration band of an MRI setting ("R<=5" or "R>5"); "ct" without an acceleration (CT entries are
    keyed by `ct_band`)."""
    if acceleration is None:
        return "ct"
    return next(name for lo, hi, name in ACCEL_BANDS if lo < acceleration <= hi)


def setting_band(modality: str, acceleration: float | None) -> str:
    """The band a setting falls in when none is given: the MRI acceleration's (`accel_band`), else "ct"."""
    return accel_band(acceleration) if modality == "mri" else "ct"


def ct_band(info: dict[str, Any]) -> str:
    """The CT setting an entry is fitted for, from an output's acquisition record (``views``, ``arc_degrees``,
    ``I0``, ``geometry``), e.g. "parallel, 60 views over 180 deg, noiseless": fewer views, a limited angle or
    Poisson noise change the posterior's errors, so a CT entry serves only its own acquisition."""
    arc, dose = info.get("arc_degrees"), info.get("I0")
    text = f"{info.get('geometry', 'parallel')}, {info.get('views')} views" + (f" over {arc:g} deg" if arc else "")
    if "I0" in info:  # simulated from HU: the dose is known
        text += f", I0 {dose:g}" if dose else ", noiseless"
    return text


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


CT_AIR_HU = -1000.0  # CT images are shown in HU; intervals work on HU - CT_AIR_HU (air at 0, as attenuation)


def interval_shift(modality: str) -> float:
    """What to add to display values before intervals and object masks (and subtract from the bounds after):
    0 for MRI magnitudes; for CT HU, the shift that puts air at 0 (otherwise |HU| >= 10% of the max selects air
    and bone, not the soft tissue)."""
    return -CT_AIR_HU if modality == "ct" else 0.0


def object_mask(image: np.ndarray) -> np.ndarray:
    """bool [..., H, W]: pixels at least OBJECT_LEVEL of their slice's maximum (`solvers.posterior.object_mask`)."""
    return posterior.object_mask(_t(image)).numpy()


#: the interval floor (`solvers.posterior.widened_std`) of methods whose spread is not a posterior's, chosen on
#: validation data: the U-Net's line-bootstrap spread ranks its errors but is near 0 over much of the image
#: (benchmarks/RESULTS.md, "A calibrated interval for the U-Net"); other methods use `posterior.INTERVAL_FLOOR`
METHOD_FLOORS: dict[str, float] = {"unet": 3.0}


def method_floor(method: str) -> float:
    """The floor `method`'s intervals are fitted with (`METHOD_FLOORS`, else `solvers.posterior.INTERVAL_FLOOR`)."""
    return METHOD_FLOORS.get(method, posterior.INTERVAL_FLOOR)


def widened_std(mean: np.ndarray, std: np.ndarray, floor: float = posterior.INTERVAL_FLOOR) -> np.ndarray:
    """``std + floor * (mean std over the object of each slice)`` [..., H, W] (`solvers.posterior.widened_std`)."""
    return posterior.widened_std(_t(mean), _t(std), floor).numpy()


def interval(mean: np.ndarray, std: np.ndarray, lam: float, magnitude: bool = True,
             floor: float = posterior.INTERVAL_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) [..., H, W] for display-unit `mean` and `std` (magnitude images clip the lower end at 0)."""
    lower, upper = posterior.interval_bounds(_t(mean), _t(std), lam, magnitude, floor)
    return lower.numpy(), upper.numpy()


def losses(mean: np.ndarray, std: np.ndarray, reference: np.ndarray, grid: np.ndarray = LAMBDA_GRID,
           floor: float = posterior.INTERVAL_FLOOR) -> np.ndarray:
    """Fraction of object pixels (of the reference) outside the interval, per slice and lambda: [S, len(grid)]."""
    mean, std, reference = (np.asarray(a, dtype=np.float64).reshape(-1, *np.shape(a)[-2:]) for a in (mean, std, reference))
    score = np.abs(reference - mean) / np.maximum(widened_std(mean, std, floor), 1e-30)
    obj = object_mask(reference)
    out = np.empty((mean.shape[0], len(grid)))
    for i in range(mean.shape[0]):
        s = np.sort(score[i][obj[i]])
        n = max(len(s), 1)
        out[i] = 1.0 - np.searchsorted(s, grid, side="right") / n   # fraction with score > lam
    return out


def crc_lambda(loss: np.ndarray, alpha: float, grid: np.ndarray = LAMBDA_GRID) -> float:
    """Conformal risk control: the smallest grid lambda with n/(n+1) mean L + 1/(n+1) <= alpha."""
    n = loss.shape[0]
    bound = n / (n + 1) * loss.mean(0) + 1.0 / (n + 1)
    ok = np.flatnonzero(bound <= alpha)
    return float(grid[ok[0]]) if len(ok) else float("inf")


def crc_feasible(n: int, alpha: float) -> bool:
    """Whether conformal risk control can certify risk level alpha with n calibration images (1/(n+1) <= alpha)."""
    return 1.0 / (n + 1) <= alpha


def rcps_lambda(loss: np.ndarray, alpha: float, delta: float, grid: np.ndarray = LAMBDA_GRID) -> float | None:
    """RCPS with the Hoeffding bound: the smallest lambda such that the UCB is < alpha for it and every larger
    grid value; None when no lambda qualifies (too few calibration images)."""
    n = loss.shape[0]
    ucb = loss.mean(0) + math.sqrt(math.log(1.0 / delta) / (2 * n))
    bad = np.flatnonzero(ucb >= alpha)
    if len(bad) == 0:
        return float(grid[0])
    if bad[-1] + 1 >= len(grid):
        return None
    return float(grid[bad[-1] + 1])


def coverage(mean: np.ndarray, std: np.ndarray, reference: np.ndarray, lam: float,
             floor: float = posterior.INTERVAL_FLOOR) -> float:
    """Fraction of the reference's object pixels inside the interval (all slices pooled)."""
    mean, std, reference = (np.asarray(a, dtype=np.float64) for a in (mean, std, reference))
    half = lam * widened_std(mean, std, floor)
    obj = object_mask(reference)
    inside = np.abs(reference - mean) <= half
    return float(inside[obj].mean())


@dataclass
class CalibrationEntry:
    """One fitted setting: which lambda, from which data, and how it was chosen."""

    method: str
    modality: str
    band: str
    lam: float
    alpha: float
    rule: str                                   # "crc" or "rcps"
    n_images: int
    lam_rcps: float | None = None
    delta: float = 0.1
    validation_coverage: float | None = None
    data: str = ""
    rel_std_range: tuple[float, float] | None = None   # 5th-95th percentile of relative_std over the images
    sampler: dict[str, Any] | None = None       # `sampler_settings` of the runs it was fitted on
    certified_alpha: float | None = None        # the level the guarantee holds at, when not alpha (too few images)
    typicality: dict[str, Any] | None = None    # {"max", "level", "n_images", "sigmas", "data"}: `typicality_threshold`;
    #                                             optional "masks": {mask kind: the same keys, fitted with that mask}
    floor: float = posterior.INTERVAL_FLOOR     # the interval floor lambda was fitted with (`method_floor`)
    sampling: str | None = None                 # the calibration runs' mask kind ("random") and coil count, recorded
    coils: int | None = None                    # (and binding) where no prior scores the runs (the U-Net's entries)

    def guarantee(self) -> str:
        """The guarantee in words: the expected fraction of uncovered object pixels it bounds."""
        level = self.certified_alpha or self.alpha
        text = (f"{self.rule}: expected fraction of uncovered object pixels <= {level:g} on exchangeable data "
                f"({self.n_images} calibration images)")
        if self.certified_alpha:
            text += (f"; {self.alpha:g} would need >= {math.ceil(1 / self.alpha) - 1} images, so lambda is the "
                     f"{self.rule} lambda at {self.certified_alpha:g}")
        return text


@dataclass
class CalibrationTable:
    """Entries for one prior; `lookup` finds the entry for a method and setting."""

    prior: str
    entries: list[CalibrationEntry] = field(default_factory=list)
    notes: str = ""

    def lookup(self, method: str, modality: str, acceleration: float | None,
               band: str | None = None) -> CalibrationEntry | None:
        """The entry of `method` for the band: given, or the MRI acceleration's (`accel_band`); CT: `ct_band`."""
        band = band or setting_band(modality, acceleration)
        return next((e for e in self.entries if e.method == method and e.modality == modality and e.band == band),
                    None)

    def put(self, entry: CalibrationEntry) -> None:
        """Add `entry`, replacing the entry of the same method, modality and band if there is one."""
        key = (entry.method, entry.modality, entry.band)
        self.entries = [e for e in self.entries if (e.method, e.modality, e.band) != key] + [entry]

    def save(self, path: Path) -> None:
        from recon.data.io import atomic_path
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"prior": self.prior, "notes": self.notes,
                                       "entries": [asdict(e) for e in self.entries]}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "CalibrationTable":
        d = json.loads(Path(path).read_text())
        return cls(d["prior"], [CalibrationEntry(**e) for e in d["entries"]], d.get("notes", ""))


def relative_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per slice: mean std over the object / the slice's 99th percentile of |mean|, [S] (a scale-free
    summary that tells calibration data from data unlike them)."""
    mean, std = np.abs(np.asarray(mean, dtype=np.float64)), np.asarray(std, dtype=np.float64)
    mean, std = mean.reshape(-1, *mean.shape[-2:]), std.reshape(-1, *std.shape[-2:])
    obj = object_mask(mean)
    out = []
    for m, s, o in zip(mean, std, obj):
        out.append(float(s[o].mean() / max(np.percentile(m, 99), 1e-30)) if o.any() else 0.0)
    return np.asarray(out)


def table_path(prior_name: str) -> Path:
    """Where a prior's table lives: ``priors/weights/NAME.calibration.json`` for a bundled prior, or
    ``CHECKPOINT.calibration.json`` beside a checkpoint file."""
    from priors.registry import WEIGHTS_DIR
    p = Path(prior_name)
    if p.suffix:
        return p.with_suffix(".calibration.json")
    return WEIGHTS_DIR / f"{prior_name}.calibration.json"


def load_table(prior_name: str) -> CalibrationTable | None:
    """The prior's table, or None when it has none."""
    path = table_path(prior_name)
    return CalibrationTable.load(path) if path.exists() else None


RUN_SPECIFIC = ("seed", "scale", "sigma_y", "n_steps", "crop")  # recorded hyper-parameters that follow the data or the seed


def weights_key(method: str) -> str:
    """The key of a run's `weights` record (and of `sampler_settings`) that names the weights a method's spread
    depends on: the U-Net's for its line bootstrap, else the prior's."""
    return "unet_sha256" if method == "unet" else "prior_sha256"


def fit_phrase(statistic: str) -> str:
    """What a typicality statistic judges, for messages: "<phrase> worse than ..." / "<phrase> poorly"."""
    return "the U-Net's image fits the acquired data" if statistic == "data misfit" else "the prior describes these images"


def sampler_settings(nfe: int, hparams: dict[str, Any], magnitude: str | None = None,
                     prior_sha256: str | None = None, unet_sha256: str | None = None) -> dict[str, Any]:
    """What a posterior's spread depends on besides the data: NFE, number of samples and the method's
    hyper-parameters (a `Posterior.hparams` record without its run-specific entries), for MRI the rule
    that places the interval's centre (`recon reconstruct --magnitude`), and the weights (sha256 of the file, as
    the output JSON's `weights` records it: the prior's, or the U-Net's for its line-bootstrap spread): new
    weights under the same name need a new fit."""
    return {"nfe": nfe, **{k: v for k, v in hparams.items() if k not in RUN_SPECIFIC},
            **({"magnitude": magnitude} if magnitude else {}),
            **({"prior_sha256": prior_sha256} if prior_sha256 else {}),
            **({"unet_sha256": unet_sha256} if unet_sha256 else {})}


# Hyper-parameters added after calibration entries were first written, at the value that reproduces the behaviour
# before they existed: an entry that does not record one was fitted with that value, whatever the default is now.
UNRECORDED: dict[str, dict[str, Any]] = {"dds": {"posterior_below": 0.0}}


def settings_mismatch(method: str, fitted: dict[str, Any], run: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{name: (fitted value, run value)} for every sampler setting where `run` differs from `fitted`. A setting the
    calibration does not record is taken at its value before it existed (`UNRECORDED`), else at the method's
    default; the prior's sha256, where the entry does not record it, is not compared (every bundled entry records
    it)."""
    import solvers
    try:
        defaults = solvers.hyper_parameters(method)
    except solvers.SolverError:
        defaults = {}
    defaults = {**defaults, **UNRECORDED.get(method, {})}
    out = {}
    for k, v in run.items():
        ref = fitted.get(k, defaults.get(k, v))
        if ref != v:
            out[k] = (ref, v)
    return out


def fit_entry(method: str, modality: str, band: str, mean: np.ndarray, std: np.ndarray, reference: np.ndarray,
              alpha: float = 0.05, delta: float = 0.1, data: str = "",
              sampler: dict[str, Any] | None = None, sampling: str | None = None,
              coils: int | None = None) -> CalibrationEntry:
    """Fit lambda on calibration slices (display-unit mean/std/reference [S, H, W]) made with the sampler
    settings `sampler` (`sampler_settings`), by conformal risk control at `alpha`, or at `SMALL_SET_ALPHA` when
    there are too few slices for `alpha` (`crc_feasible`; the entry records it as ``certified_alpha``), with the
    method's interval floor (`method_floor`, recorded in the entry); `sampling` and `coils` are the runs' mask kind
    and coil count."""
    floor = method_floor(method)
    loss = losses(mean, std, reference, floor=floor)
    n = loss.shape[0]
    level = alpha if crc_feasible(n, alpha) else max(alpha, SMALL_SET_ALPHA)
    lam = crc_lambda(loss, level)
    if not math.isfinite(lam):
        raise ValueError(f"{method} {modality} {band}: no lambda up to {LAMBDA_GRID[-1]} reaches alpha = {level} "
                         f"with {n} calibration images")
    rel = relative_std(mean, std)
    return CalibrationEntry(method, modality, band, lam, alpha, "crc", n,
                            rcps_lambda(loss, alpha, delta), delta, coverage(mean, std, reference, lam, floor), data,
                            (float(np.percentile(rel, 5)), float(np.percentile(rel, 95))), sampler,
                            None if level == alpha else level, floor=floor, sampling=sampling, coils=coils)


def typicality_threshold(values: np.ndarray, level: float = 0.05) -> float:
    """The split-conformal outlier threshold of n in-distribution values (one per validation image): the
    ``ceil((n + 1)(1 - level))``-th smallest. A new exchangeable value exceeds it with probability <= level;
    inf when n is too small for the level (n < 1/level - 1)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    k = math.ceil((v.size + 1) * (1 - level))
    return float(v[k - 1]) if k <= v.size else math.inf


def _typicality_for(typicality: dict[str, Any] | None, mask: str | None,
                    score_sigmas: Sequence[float] | None) -> tuple[dict[str, Any] | None, str | None]:
    """An entry's typicality threshold for a run: the one of the run's `mask` kind where the entry has it, else the
    entry's own; None, with the reason, when it was fitted at other levels than the run's `score_sigmas`."""
    if not typicality:
        return None, None
    typical = typicality.get("masks", {}).get(mask, typicality)
    levels = typical["sigmas"]
    if score_sigmas is not None and not (len(levels) == len(score_sigmas) and np.allclose(levels, score_sigmas)):
        return None, (f"the typicality threshold was fitted at noise levels {levels}, the samples were scored at "
                      f"{list(score_sigmas)}: the prior's fit to the data is not tested")
    return typical, None


def gaussian_lambda(alpha: float) -> float:
    """The uncalibrated fallback: the two-sided Gaussian quantile (1.96 for alpha = 0.05)."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(1 - alpha / 2)


def choose_lambda(table: CalibrationTable | None, method: str, modality: str, acceleration: float | None,
                  alpha: float = 0.05, rel_std: float | None = None,
                  sampler: dict[str, Any] | None = None, band: str | None = None,
                  score_norm: float | None = None,
                  score_sigmas: Sequence[float] | None = None, mask: str | None = None,
                  coils: int | None = None) -> tuple[float, dict[str, Any]]:
    """Lambda for a reconstruction and a record of where it came from (`band`: the setting's band where the
    acceleration does not give it, CT's `ct_band`); the record's ``floor`` is the interval floor to use with it
    (the entry's, else `method_floor`).

    A matching table entry with the same alpha is used ("calibrated"), unless `rel_std` (the data's
    `relative_std`, median over slices) lies outside half to twice the range seen in calibration, `score_norm`
    (the prior's fit to the samples, `recon.methods.prior_fit`, median over slices) exceeds the entry's
    typicality threshold, or the run's `sampler` settings (`sampler_settings`) differ from
    the entry's: then it is still used but flagged uncalibrated (data or settings unlike the calibration's). Without an
    entry: the largest lambda
    the table holds for this method and modality (the most conservative calibrated value), else the Gaussian
    quantile; both flagged "uncalibrated" with the reason. A `score_norm` is recorded as ``prior_fit`` (with the
    entry's threshold and verdict; both None without a threshold). `score_sigmas` are the levels the score was
    taken at (`recon.methods.typicality_sigmas`): a threshold fitted at other levels does not apply, and the
    interval is flagged uncalibrated. An entry may hold thresholds per sampling-mask kind (``typicality["masks"]``,
    fitted on validation runs with that mask); the run's `mask` kind picks one, else the entry's own applies. The
    U-Net's entries test its own statistic instead (``typicality["statistic"]`` "data misfit",
    `recon.baselines.unet.data_misfit`, passed as `score_norm`) and, since no prior scores its images, hold only for
    the acquisition they record (``sampling``: the mask kind; ``coils``: the run's `coils`, the U-Net's input is
    their RSS): a run with another is flagged uncalibrated.
    """
    band = band or setting_band(modality, acceleration)
    entry = table.lookup(method, modality, acceleration, band) if table else None
    matched = entry is not None and abs(entry.alpha - alpha) < 1e-12
    typical, untested = _typicality_for(entry.typicality if matched else None, mask,
                                        score_sigmas if score_norm is not None else None)
    fit = {} if score_norm is None else {"prior_fit": {
        "score_norm": score_norm, "threshold": typical["max"] if typical else None,
        **({"statistic": typical["statistic"]} if typical and "statistic" in typical else {}),  # else the score norm
        "typical": score_norm <= typical["max"] if typical else None,
        **({"sigmas": [float(v) for v in score_sigmas]} if score_sigmas is not None else {})}}
    if matched:
        rec = {"calibrated": True, "lambda": entry.lam, "floor": entry.floor, "rule": entry.rule, "band": entry.band,
               "n_images": entry.n_images, "data": entry.data, "guarantee": entry.guarantee(), **fit}
        why = []
        lo_hi = entry.rel_std_range
        if rel_std is not None and lo_hi is not None and not 0.5 * lo_hi[0] <= rel_std <= 2.0 * lo_hi[1]:
            why.append(f"relative std {rel_std:.4f} is outside the calibration data's [{lo_hi[0]:.4f}, "
                       f"{lo_hi[1]:.4f}] (x0.5..x2): data unlike the calibration set")
        if fit and fit["prior_fit"]["typical"] is False:
            statistic = fit["prior_fit"].get("statistic", "score norm")
            why.append(f"{fit_phrase(statistic)} worse than {1 - typical['level']:.0%} of its validation images of "
                       f"this setting ({statistic} {score_norm:.3f} > {typical['max']:.3f}): data unlike the "
                       "calibration set")
        if untested:
            why.append(untested)
        if entry.sampling and mask and mask != entry.sampling:
            why.append(f"{mask} sampling, the calibration's was {entry.sampling} (no prior-based test covers the "
                       "difference): data unlike the calibration set")
        if entry.coils and coils and coils != entry.coils:
            why.append(f"{coils} coils, the calibration's had {entry.coils} (no prior-based test covers the "
                       "difference): data unlike the calibration set")
        diff = settings_mismatch(method, entry.sampler, sampler) if entry.sampler and sampler else {}
        if diff:
            why.append("sampler settings unlike the calibration's (" + ", ".join(
                f"{k} {a} there, {b} here" for k, (a, b) in diff.items()) + ")")
        if why:
            rec.update(calibrated=False, reason="; ".join(why) + "; the interval's coverage is not guaranteed here")
        return entry.lam, rec
    same = [e for e in (table.entries if table else []) if e.method == method and e.modality == modality
            and abs(e.alpha - alpha) < 1e-12]
    if same:
        widest = max(same, key=lambda e: e.lam)
        lam, floor = widest.lam, widest.floor
        why = (f"no calibration for {method} at this setting ({band});"
               f" using the largest calibrated lambda of this method ({lam})")
    else:
        lam, floor = gaussian_lambda(alpha), method_floor(method)
        why = f"no calibration table for {method} ({modality}); using the Gaussian quantile {lam:.3f}"
    return lam, {"calibrated": False, "lambda": lam, "floor": floor, "reason": why, **fit}
