"""The benchmark's outputs: ``results.json``, ``REPORT.md`` and the figures, and the machine description."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from recon.benchmark.aggregate import select, summary_table
from recon.benchmark.cases import CALIB_LINES
from recon.benchmark.figures import figure_calibration, figure_cost, figure_examples, figure_nfe, figure_quality
from recon.benchmark.runner import BenchmarkResult
from recon.benchmark.stats import PATCH, SUPPORT_FRACTION, Z95
from recon.benchmark.tables import calibration_table, cost_table, file_table, quality_tables, std_table
from recon.benchmark.targets import Target, evaluate_targets
from recon.pipeline.writers import json_safe
from recon.problems.ct import HU_RANGE


def results_json(result: BenchmarkResult, targets: Sequence[Target], command: str) -> dict[str, Any]:
    p = result.preset
    return {
        "preset": p.name, "command": command,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "runtime_s": result.runtime_s, "meta": result.meta,
        "config": {
            **{k: v for k, v in dataclasses.asdict(p).items() if k not in ("runs", "mri_settings", "ct_settings")},
            "mri_settings": [dataclasses.asdict(s) for s in p.mri_settings],
            "ct_settings": [dataclasses.asdict(s) for s in p.ct_settings],
            "runs": [{**dataclasses.asdict(r), "hparams": dict(r.hparams)} for r in p.runs],
            "support_fraction": SUPPORT_FRACTION, "patch": PATCH, "z": Z95,
        },
        "targets": [dataclasses.asdict(t) for t in targets],
        "summary": summary_table([r for r in result.records], ("modality", "dataset", "setting", "label"),
                                 ("psnr", "ssim", "nmse", "nfe", "wall_s", "mean_std", "mean_std_rel", "spearman",
                                  "spearman_patch", "coverage", "ause")),
        "records": result.records,
        "sparsification": {f"{m}/{s}/{lab}": {"by_std": np.mean([c[0] for c in cs], 0).round(4).tolist(),
                                              "oracle": np.mean([c[1] for c in cs], 0).round(4).tolist()}
                           for (m, s, lab), cs in result.curves.items()},
        "skipped": result.skipped,
    }


def machine_description(device: torch.device) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cores} CPU cores ({platform.machine()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){gpu}")


def write_outputs(result: BenchmarkResult, out_dir: Path, command: str) -> list[Target]:
    """REPORT.md, results.json and the PNG figures into `out_dir`; returns the evaluated targets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = evaluate_targets(result.preset, result.records)
    figs = []
    for fname, title, fn in (
        ("quality_mri.png", "MRI quality per setting", lambda p: figure_quality(result, "mri", p)),
        ("quality_ct.png", "CT quality per setting", lambda p: figure_quality(result, "ct", p)),
        ("quality_vs_nfe.png", "Quality against NFE", lambda p: figure_nfe(result, p)),
        ("cost.png", "Time per slice and network fraction", lambda p: figure_cost(result, p)),
        ("calibration.png", "Uncertainty calibration", lambda p: figure_calibration(result, p)),
        ("examples_mri.png", "MRI examples", lambda p: figure_examples(result, "mri", p)),
        ("examples_ct.png", "CT examples", lambda p: figure_examples(result, "ct", p)),
    ):
        if fn(out_dir / fname):
            figs.append((title, fname))
    (out_dir / "results.json").write_text(json.dumps(json_safe(results_json(result, targets, command)), indent=1))
    (out_dir / "REPORT.md").write_text(render_report(result, targets, figs, command))
    return targets


def render_report(result: BenchmarkResult, targets: Sequence[Target], figures: Sequence[tuple[str, str]],
                  command: str) -> str:
    p = result.preset
    m = result.meta
    lines = [
        f"# Benchmark report — preset `{p.name}`",
        "",
        f"- command: `{command}`",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; runtime "
        f"{result.runtime_s / 60:.1f} min",
        f"- machine: {m.get('machine', '?')}; device `{m.get('device', '?')}`",
        f"- priors: {m.get('priors', '?')}; U-Nets: {m.get('unets', '?')}",
        f"- posterior samples per slice: {p.n_samples}; seeds: mask seed = case index, sampler seed 0",
        "",
        "## Targets",
        "",
        *[t.line() for t in targets],
        "",
    ]
    if m.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in m["notes"]], ""]
    if p.reductions:
        lines += ["## What this preset reduces", "", *[f"- {r}" for r in p.reductions], ""]
    lines += [
        "## Data and settings",
        "",
        f"- BrainWeb test subjects {', '.join(map(str, p.brainweb_subjects))}, {p.brainweb_slices} slice(s) each, "
        f"T1w, p99(|x|) = 1, 8 birdcage coils, complex k-space noise std {p.mri_noise_std} (as the U-Net's "
        "training data), "
        + (f"central {p.brainweb_kspace[0]} x {p.brainweb_kspace[1]} of k-space (lower resolution, whole head in view)"
           if p.brainweb_kspace else "full 217 x 181"),
        f"- real T1 brain (`fastmri_format/brain_t1_8ch_real.h5`): "
        + ("not used" if not p.real_t1 else "retrospective undersampling of its acquired lines"
           + (f", central {p.real_t1_kspace_crop[0]} x {p.real_t1_kspace_crop[1]} of k-space"
              if p.real_t1_kspace_crop else ", file target")),
        f"- real Poisson-undersampled files: {', '.join(p.poisson_files) or 'none'} (own sampling, no ground truth; "
        "ESPIRiT maps from their own fully sampled centre)",
        f"- coil maps of the retrospective cases: ESPIRiT from the central {CALIB_LINES} phase lines of the fully "
        "sampled data (a separate reference scan), shared by all masks of a slice: ESPIRiT needs >= 16 "
        "calibration lines and the fastMRI centre fractions give 5-14 at these sizes; the real T1 file has "
        "wrap-around (field of view smaller than the head) and uses 2 map sets",
        f"- head CT test slices {', '.join(map(str, p.ct_slices))}, "
        f"{'crop ' + 'x'.join(map(str, p.ct_size)) if p.ct_size else '256 x 256'}, noiseless parallel-beam "
        "line integrals (ASTRA)",
        "- MRI settings: " + "; ".join(f"{s.name} (centre {s.center_fraction}, "
                                       f"{'in' if s.in_distribution else 'out of'} distribution for the U-Net)"
                                       for s in p.mri_settings),
        "- CT settings: " + "; ".join(f"{s.name} ({s.views} views over {s.arc_degrees:g} deg)" for s in p.ct_settings),
        "- metrics: fastMRI convention (`recon.metrics`: data range = reference maximum, SSIM 7x7); CT on HU "
        f"clipped to [-1024, 2000] (data range {HU_RANGE:g})",
        f"- calibration on the object support (reference >= {100 * SUPPORT_FRACTION:g}% of its maximum); "
        f"patch statistics on {PATCH}x{PATCH} patches at least half inside it",
        "",
        "## Quality",
        "",
        "A count in parentheses: the method ran on that many cases only (probes); compare it on those cases.",
        "",
    ]
    for title, table in quality_tables(result):
        lines += [f"### {title}", "", table, ""]
    if select(result.records, setting="file"):
        lines += ["### Real Poisson-undersampled k-space (no ground truth)", "",
                  "Agreement with BART `pics` (2 ESPIRiT map sets, combined by root-sum-of-squares) after a "
                  "least-squares intensity match; `pics` is itself an l1-wavelet reconstruction, not ground truth.",
                  "", file_table(result), ""]
    on_cuda = str(m.get("device", "cpu")).startswith("cuda")
    peak = ("CUDA `max_memory_allocated` while the method ran" if on_cuda else
            "peak resident set size of the process while the method ran (VmHWM reset before each method; "
            "includes the loaded data and networks)")
    lines += ["## Cost", "", cost_table(result), "",
              "Peak memory: " + peak + "; +MiB: its increase over the memory in use when the method started "
              "(the method's working memory; on CPU a lower bound, since memory that earlier methods freed and the "
              "allocator kept is reused without raising the resident set). "
              "NFE: network evaluations per slice (all samples go through the network as one batch). Network time: "
              "share of the wall time spent inside the prior's network.", "",
              "## Uncertainty calibration", "", calibration_table(result), "",
              "Mean std: MRI in % of the reference maximum, CT in HU. Coverage: fraction of support pixels whose "
              "|mean - reference| <= 1.96 std (0.95 if calibrated and Gaussian). AUSE: area between the "
              "sparsification curve (remove largest-std pixels first) and the oracle (largest-error first), "
              "both normalised to start at 1; 0 is a perfect ranking.", "",
              ]
    for mod, unit in (("mri", "% of the reference maximum"), ("ct", "HU")):
        t = std_table(result, mod)
        if t:
            lines += [f"### Mean posterior std per setting, {mod.upper()} ({unit})", "", t, ""]
    if figures:
        lines += ["## Figures", ""]
        for title, fname in figures:
            lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    if result.skipped:
        uniq = list(dict.fromkeys(s.split(" on ")[0] + " — " + s.split(": ", 1)[-1] for s in result.skipped))
        lines += ["## Skipped", "", *[f"- {s}" for s in uniq], ""]
    lines += ["## Reproduce", "", "```", command, "```", "",
              "The `full` preset (all 24 CT test slices at 256 x 256, 4 BrainWeb slices per subject, "
              "the real T1 at 320 x 256, every solver at its default NFE on every case, sweeps dds 10/20/50/100, "
              "projection 100/500/1000/2000, ccdf 10/20/40) needs a GPU or a long run:", "",
              "```", "recon benchmark --preset full --device cuda --out benchmarks/results/full", "```", ""]
    return "\n".join(lines)
