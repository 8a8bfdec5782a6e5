"""Helpers shared by the benchmark scripts: timing, writing a report and appending a section to RESULTS.md."""
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


def wall_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, sync_cuda: bool = False,
              summary: Callable[[list[float]], float] = min) -> float:
    """Seconds per call of `fn`: `summary` (default the minimum) of `repeats` timed calls after `warmup` untimed ones.

    The minimum is the reproducible number on a shared machine (other jobs slow single calls at random);
    pass ``summary=statistics.median`` for the median. With `sync_cuda` every timed call starts and ends
    on an idle CUDA device, so asynchronous kernels count in the call that launched them.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return summary(times)


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


def write_report(path: Path, lines: list[str]) -> None:
    """Write the markdown `lines` (one string a line) to `path`, making its folder, and print them."""
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
