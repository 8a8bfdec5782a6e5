"""`recon evaluate --target-path T --predictions-path P`: fastMRI's metrics over a directory of
reconstructions, per acquisition, for `reconstruction` and every method stored under `solvers/`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-path", required=True, type=Path,
                   help="directory of fastMRI files holding reconstruction_rss / reconstruction_esc")
    p.add_argument("--predictions-path", required=True, type=Path,
                   help="directory of NAME.h5 predictions (a `recon reconstruct` output, or any files with a "
                        "`reconstruction` dataset [slices, H, W])")
    p.add_argument("--challenge", choices=["auto", "multicoil", "singlecoil"], default="auto",
                   help="multicoil: reconstruction_rss; singlecoil: reconstruction_esc; auto: whichever the "
                        "target holds (rss first)")
    p.add_argument("--acquisition", default=None,
                   help="only volumes whose target has this acquisition attribute (e.g. AXT2, CORPD_FBK)")
    p.add_argument("--json", type=Path, default=None, help="default: PREDICTIONS/evaluation.json")
    p.add_argument("--csv", type=Path, default=None, help="default: PREDICTIONS/evaluation.csv")


def run(args: argparse.Namespace) -> int:
    from recon.evaluate import EvaluationError, evaluate_directory, format_table, write_csv, write_json

    try:
        ev = evaluate_directory(args.target_path, args.predictions_path, args.challenge, args.acquisition)
    except (EvaluationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json_path = args.json or args.predictions_path / "evaluation.json"
    csv_path = args.csv or args.predictions_path / "evaluation.csv"
    write_json(json_path, ev)
    write_csv(csv_path, ev.summary)
    if ev.targets_without_prediction:
        n = len(ev.targets_without_prediction)
        print(f"note: {n} target file(s) have no prediction and were not evaluated "
              f"(listed in {json_path})", file=sys.stderr)
    print(format_table(ev.summary))
    print(f"\nper-volume scores: {json_path}\nsummary: {csv_path}")
    return 0
