"""Helpers shared by the benchmark scripts: timing and appending a section to RESULTS.md."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}{gpu}"


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, sync_cuda: bool = False) -> float:
    """Best wall time of `repeats` calls, in seconds, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def append_results(title: str, table: str, notes: str = "") -> None:
    """Append a dated section with the machine, the command and a markdown table to RESULTS.md."""
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix().split("/work/main/")[-1], *sys.argv[1:]])
    text = (f"\n## {title}\n\n{_dt.date.today().isoformat()} · {machine()} · `{cmd}`\n\n{table.strip()}\n"
            + (f"\n{notes.strip()}\n" if notes else ""))
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section: date, machine, the command that produced it.\n")
    with RESULTS.open("a") as f:
        f.write(text)
    print(text)
