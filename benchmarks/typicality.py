"""Fit and check the typicality threshold of a prior's interval entries (`recon.intervals.typicality_threshold`).

    # per-sample score norms of a method's posterior samples on files at one setting (cached per file):
    python -m benchmarks.typicality score --work WORK --mask random --accel 4 --center-fraction 0.08 FILES...
    # the threshold of a band from the validation scores of one setting, into the prior's table:
    python -m benchmarks.typicality fit --work WORK --setting random-4 --method dds
    # the scores of other files (e.g. another anatomy) against the fitted threshold:
    python -m benchmarks.typicality report --work WORK

`score` builds each file's middle slice as `recon reconstruct` does (`prepare_mri_slice`: maps from the file's
own centre, noise estimated), samples the method with its default settings (2 samples: the statistic is per
sample, so the count does not change its distribution) and stores the score norm of each sample
(`recon.methods.sample_scores`) in WORK/SETTING/NAME.json. `fit` takes one value per image (the median over its
samples, as `recon.methods.prior_fit`) and writes ``typicality`` into the method's entry of the band.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from recon import intervals as iv


def score_files(files: list[Path], out: Path, mask: str, accel: float, center_fraction: float, method: str,
                prior_name: str = "brain-mri-complex", n_samples: int = 2) -> None:
    """Per-sample score norms of `method` on the middle slice of each file, cached in OUT/NAME.json."""
    import solvers
    from priors.registry import load
    from recon.data.io import load_fastmri
    from recon.methods import sample_scores
    from recon.problems.mri import MaskSpec, prepare_mri_slice

    out.mkdir(parents=True, exist_ok=True)
    prior = load(prior_name)
    for f in files:
        target = out / f"{f.stem}.json"
        if target.exists():
            continue
        vol = load_fastmri(f)
        with h5py.File(f) as h:
            k = h["kspace"].shape[0] // 2
            kspace = h["kspace"][k]
            ref = h["reconstruction_rss"][k] if "reconstruction_rss" in h else None
        pb = prepare_mri_slice(kspace, vol.header, MaskSpec(mask, accel, center_fraction), target=ref)
        post = solvers.sample(method, pb.op, pb.y, prior, n_samples=n_samples, seed=0, sigma_y=pb.noise_std)
        scores = sample_scores(post, prior).tolist()
        target.write_text(json.dumps({"file": str(f), "slice": k, "method": method, "prior": prior_name,
                                      "mask": mask, "accel": accel, "center_fraction": center_fraction,
                                      "score_norm": scores}) + "\n")
        print(f"{f.name}: {np.median(scores):.3f}", flush=True)


def image_scores(folder: Path) -> dict[str, float]:
    """{file name: median over its samples} of the cached scores in a setting's folder."""
    return {j.stem: float(np.median(json.loads(j.read_text())["score_norm"])) for j in sorted(folder.glob("*.json"))}


def fit(work: Path, setting: str, method: str, level: float, prior_name: str, data: str,
        mask_kind: str | None = None) -> dict:
    """Write ``typicality`` into the method's entry of the setting's band (with `mask_kind`: its threshold for runs
    with that kind of mask, ``typicality["masks"][mask_kind]``, beside the entry's own); returns what was written."""
    scores = image_scores(work / setting)
    values = np.array(list(scores.values()))
    threshold = iv.typicality_threshold(values, level)
    if not np.isfinite(threshold):
        raise SystemExit(f"{len(values)} images are too few for level {level} (need >= {int(np.ceil(1 / level)) - 1})")
    path = iv.table_path(prior_name)
    table = iv.CalibrationTable.load(path)
    accel = float(setting.rsplit("-", 1)[1])
    entry = table.lookup(method, "mri", accel)
    if entry is None:
        raise SystemExit(f"{path}: no {method} entry for {setting}")
    from recon.methods import typicality_sigmas
    record = {"max": round(threshold, 4), "level": level, "n_images": len(values),
              "sigmas": list(typicality_sigmas(method)), "data": data,
              "range": [round(float(values.min()), 4), round(float(values.max()), 4)]}
    masks = (entry.typicality or {}).get("masks")
    if mask_kind is None:
        entry.typicality = {**record, **({"masks": masks} if masks else {})}
    elif entry.typicality is None:
        raise SystemExit(f"{path}: fit the {method} entry's own threshold first (without --mask-kind)")
    else:
        entry.typicality.setdefault("masks", {})[mask_kind] = record
    table.save(path)
    return record


def report(work: Path) -> list[str]:
    """Lines: per setting folder, the median score norm of each file."""
    lines = []
    for d in sorted(p for p in work.iterdir() if p.is_dir()):
        for name, v in image_scores(d).items():
            lines.append(f"{d.name} {name} {v:.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("score", "fit", "report"))
    ap.add_argument("files", type=Path, nargs="*")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--mask", default="random")
    ap.add_argument("--accel", type=float, default=4.0)
    ap.add_argument("--center-fraction", type=float, default=0.08)
    ap.add_argument("--folder", default=None, help="score: the setting folder under WORK (default MASK-ACCEL)")
    ap.add_argument("--setting", default=None, help="fit: the setting folder (random-4, random-8)")
    ap.add_argument("--method", default="dds")
    ap.add_argument("--level", type=float, default=0.05)
    ap.add_argument("--prior", default="brain-mri-complex")
    ap.add_argument("--data", default="", help="fit: the validation data in words (recorded in the entry)")
    ap.add_argument("--mask-kind", default=None,
                    help="fit: the threshold for runs with this kind of mask (e.g. equispaced), from a setting "
                         "folder scored with it; the entry's own threshold stays")
    a = ap.parse_intermixed_args(argv)
    if a.command == "score":
        folder = a.folder or f"{a.mask}-{a.accel:g}"
        score_files(a.files, a.work / folder, a.mask, a.accel, a.center_fraction, a.method, a.prior)
    elif a.command == "fit":
        print(json.dumps(fit(a.work, a.setting, a.method, a.level, a.prior, a.data, a.mask_kind)))
    else:
        print("\n".join(report(a.work)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
