"""Scoring one outcome: quality against the reference, agreement with another reconstruction, calibration."""
from __future__ import annotations

from typing import Any

import numpy as np

from recon import metrics
from recon.benchmark.cases import Case
from recon.benchmark.execution import Outcome
from recon.benchmark.presets import MethodRun
from recon.benchmark.stats import calibration, support_mask
from recon.problems.ct import HU_RANGE, metric_image


def quality(case: Case, image: np.ndarray) -> dict[str, float | None]:
    """PSNR / SSIM / NMSE against the reference (fastMRI convention; CT on the clipped HU window)."""
    if case.reference is None:
        return {"psnr": None, "ssim": None, "nmse": None}
    if case.modality == "ct":
        ref, pred = metric_image(case.reference), metric_image(image)
        return {"psnr": metrics.psnr(ref, pred, HU_RANGE), "ssim": metrics.ssim(ref, pred, HU_RANGE),
                "nmse": metrics.nmse(ref, pred)}
    return metrics.all_metrics(case.reference, image)


def agreement(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Agreement with another reconstruction after a least-squares intensity match (BART pics rescales the
    data internally, so its intensities are in other units): PSNR, SSIM, NMSE and the scale applied."""
    a = float((reference * image).sum() / max(float((image * image).sum()), 1e-30))
    return {"psnr": metrics.psnr(reference, a * image), "ssim": metrics.ssim(reference, a * image),
            "nmse": metrics.nmse(reference, a * image), "scale": a}


def support_of(case: Case, image: np.ndarray) -> np.ndarray:
    """Object support from the reference (CT: on the clipped HU window), or from `image` without one."""
    if case.reference is None:
        return support_mask(metric_image(image) if case.modality == "ct" else image)
    return support_mask(metric_image(case.reference) if case.modality == "ct" else case.reference)


def std_scale(case: Case, image: np.ndarray) -> float:
    """Divisor that makes a mean std comparable across cases: MRI the reference (or image) maximum, CT 1 (HU)."""
    if case.modality == "ct":
        return 1.0
    return float((case.reference if case.reference is not None else image).max())


def score(run: MethodRun, case: Case, out: Outcome) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """The record of one outcome, and its sparsification curves (or None)."""
    rec: dict[str, Any] = {
        "modality": case.modality, "dataset": case.dataset, "case": case.name, "setting": case.setting,
        "acceleration": round(float(case.acceleration), 3), "label": run.label, "method": run.method,
        "posterior": run.is_posterior, "hparams": dict(run.hparams), "nfe": out.nfe, "wall_s": out.wall_s,
        "network_s": out.network_s, "peak_mib": out.peak_mib, "extra_mib": out.extra_mib,
        "peak_kind": out.peak_kind,
        **quality(case, out.mean),
    }
    if case.pics is not None:
        rec["agreement_pics"] = agreement(case.pics, out.mean)
    curve = None
    if out.std is not None:
        sup = support_of(case, out.mean)
        rec["mean_std"] = float(out.std[sup].mean())
        rec["mean_std_rel"] = rec["mean_std"] / std_scale(case, out.mean)
        if case.reference is not None:
            cal = calibration(out.mean, out.std, case.reference, sup)
            curve = cal.pop("curve")
            rec.update(cal)
    return rec, curve
