"""Running one method on one case: its images in display units, wall time, network evaluations, peak memory."""
from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recon.benchmark.cases import Case
from recon.benchmark.presets import MethodRun
from recon.methods import MethodConfig, run_method


class PeakMemory:
    """Peak memory (MiB) during a block, and its increase over the start (`extra_mib`).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: peak resident set size (Linux: VmHWM after resetting it
    through /proc/self/clear_refs; elsewhere the process-lifetime ``getrusage`` maximum, marked by
    ``kind = "process max RSS"``).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")
        self.extra_mib = float("nan")
        self.kind = ""
        self._start = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max allocated"
        else:
            self.kind = "peak RSS" if self._reset_hwm() else "process max RSS"
            self._start = self._status_kib("VmRSS:") / 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "peak RSS":
            self.mib = self._status_kib("VmHWM:") / 1024
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.extra_mib = max(self.mib - self._start, 0.0) if self._start > 0 else float("nan")

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakMemory._status_kib("VmHWM:") > 0
        except OSError:
            return False

    @staticmethod
    def _status_kib(key: str) -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return float(line.split()[1])
        except OSError:
            pass
        return 0.0


@dataclass
class Outcome:
    """A method's images on one case (display units) and its costs."""

    mean: np.ndarray
    std: np.ndarray | None
    nfe: int
    wall_s: float
    network_s: float
    peak_mib: float
    extra_mib: float
    peak_kind: str


def execute(run: MethodRun, case: Case, settings: MethodConfig) -> Outcome:
    """Run one method on one case; images in display units, std over the displayed samples (N > 1)."""
    s = dataclasses.replace(settings, nfe=run.nfe, hparams={run.method: dict(run.hparams)} if run.hparams else {})
    device = case.problem.y.device
    prior = s.prior
    nfe_before = prior.nfe if prior is not None else 0
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        post = run_method(run.method, case.problem, s)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    mean = case.display(post.mean).float().cpu().numpy()
    std = None
    if post.samples is not None and post.samples.shape[0] > 1:
        std = case.display(post.samples).float().std(0).cpu().numpy()
    nfe = post.nfe or ((prior.nfe - nfe_before) if (prior is not None and run.is_posterior) else 0)
    return Outcome(mean, std, int(nfe), wall, float(post.network_time), mem.mib, mem.extra_mib, mem.kind)
