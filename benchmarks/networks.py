"""Forward time and peak memory of the full-size published networks on CPU (batch 1).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/networks.py [--threads 2] [--repeats 2] [--size 320]

Each network runs in a fresh subprocess with random weights (timing and memory do not depend on
the values): NCSN++ (score-MRI knee config, sigma input) and the ADM U-Net (DDS fastMRI knee
320 complex config, 2 input channels, integer timestep), both at ``size x size``, under
``torch.no_grad``. Reported: parameter count, weight memory, median forward time over
``--repeats`` runs after one warm-up, and the peak resident memory added by a forward pass
(Linux ``VmHWM`` reset through ``/proc/self/clear_refs`` before the timed runs).
Prints a table and appends it to benchmarks/RESULTS.md. The machine is shared: the load
average before and after the run is recorded with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is benchmarks/, whose operators.py would shadow the `operators` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

MODELS = {
    "ncsnpp": ("ncsnpp", "scoremri_fastmri_knee_320"),
    "adm": ("adm", "dds_fastmri_knee_320_complex"),
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(model: str, size: int, repeats: int, threads: int) -> dict:
    import torch

    from priors.checkpoints import build_network

    torch.set_num_threads(threads)
    family, name = MODELS[model]
    torch.manual_seed(0)
    net = build_network(family, name).eval()
    n_params = sum(p.numel() for p in net.parameters())
    weight_mib = sum(t.numel() * t.element_size() for t in net.state_dict().values()) / 2**20
    g = torch.Generator().manual_seed(0)
    if family == "ncsnpp":
        x = torch.rand(1, 1, size, size, generator=g)
        cond = torch.tensor([1.0])
    else:
        x = torch.randn(1, 2, size, size, generator=g)
        cond = torch.tensor([500.0])
    times = []
    with torch.no_grad():
        net(x, cond)  # warm-up
        rss_before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = net(x, cond)
            times.append(time.perf_counter() - t0)
        peak = _status_kib("VmHWM")
    return {"model": model, "config": name, "params": n_params, "weight_mib": weight_mib,
            "out_shape": list(out.shape), "time_s": statistics.median(times), "times": times,
            "forward_peak_mib": (peak - rss_before) / 1024, "peak_rss_mib": peak / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--child", choices=list(MODELS), help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.size, args.repeats, args.threads)))
        return

    root = ROOT
    load_before = os.getloadavg()[0]
    rows = []
    for model in args.models:
        cmd = [sys.executable, "-m", "benchmarks.networks", "--child", model, "--size", str(args.size),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()[0]

    lines = ["| network | config | parameters | weights (MiB) | input | forward (s, median) | runs (s) | "
             "forward peak extra RSS (MiB) | peak RSS (MiB) |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: |"]
    for r in rows:
        c = 1 if r["model"] == "ncsnpp" else 2
        runs = ", ".join(f"{t:.1f}" for t in r["times"])
        lines.append(f"| {r['model']} | {r['config']} | {r['params']:,} | {r['weight_mib']:.0f} | "
                     f"1x{c}x{args.size}x{args.size} | {r['time_s']:.1f} | {runs} | {r['forward_peak_mib']:.0f} | "
                     f"{r['peak_rss_mib']:.0f} |")
    table = "\n".join(lines)
    notes = (f"CPU, float32, batch 1, torch threads {args.threads}, random weights, `torch.no_grad`, one warm-up "
             f"call. Shared machine: 1-minute load average {load_before:.1f} before, {load_after:.1f} after "
             f"the run, so times are upper bounds. \"forward peak extra RSS\": peak resident memory during the "
             f"timed forward passes minus the resident memory before them (activations and workspace).")
    if args.no_write:
        print(table)
        print(notes)
        return
    from benchmarks.common import append_results

    append_results(f"Published networks: forward pass of NCSN++ and ADM at {args.size}x{args.size}", table, notes)


if __name__ == "__main__":
    main()
