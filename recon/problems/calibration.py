"""Coil calibration chosen from the data: ESPIRiT where the fully sampled centre supports it, NLINV below.

`calibrate(y, mask)` finds the fully sampled centre (`operators.espirit.acs_region`), and

* with at least `ESPIRIT_MIN_ACS` centre lines runs ESPIRiT (Uecker et al. 2014) on them;
* with fewer (down to `MIN_ACS`) first estimates image and coils jointly with NLINV (`operators.nlinv`,
  Uecker et al. 2008), which uses every sample, not only the centre, completes a ``calib_width``-line
  centre with NLINV's k-space prediction (`nlinv_filled_centre`) and runs ESPIRiT on that;
* below `MIN_ACS` refuses with a `CalibrationError` that names the found width and the centre
  fraction that would work.

ESPIRiT always computes two eigenvector sets; with ``n_maps=None`` the second is kept when its support
(eigenvalue above `CROP`) covers at least `SECOND_SET_FRACTION` of the first set's: two sets are needed
where the field of view is smaller than the object (wrap-around, BART ``ecalib -m 2``); elsewhere the
second eigenvalue stays below the crop almost everywhere, and a second set would only double the work
of the posterior samplers.

The thresholds come from ``benchmarks/calibration.py`` (table in ``benchmarks/results/calibration.md``;
CG-SENSE PSNR with each calibration's maps, equispaced 4x): on the real wrapped 8-coil file ESPIRiT's two
sets from the measured centre give 27.4 dB at 17 lines but 22.3 at 13 and 20.0 at 8, while the
NLINV-completed centre gives 26.6 / 26.1 / 26.7 at 13 / 10 / 8 lines and nothing beats zero-filled at
6 lines. The second set's support is 1-4 % on the unwrapped validation slice at every width; folding that
slice to a phase field of view of 170 / 160 / 150 lines (object 181) gives 3-4 / 6-7 / 11-12 % and a gain
of two sets over one of 0.1-0.2 / 0.8-1.4 / 3-4.5 dB; on the real file 14-21 % wherever a calibration works.

The returned `Calibration` carries its own record (`Calibration.record`) for the output JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from operators.espirit import CalibrationError, acs_region, espirit, kernel_for, measured_signal, sampled_pattern
from operators.fft import fft2c
from operators.nlinv import nlinv

#: fewest centre lines for ESPIRiT on the measured centre (below, its maps break down on the real file)
ESPIRIT_MIN_ACS = 16
#: fewest centre lines for any calibration (below, none beat zero-filled on the real file)
MIN_ACS = 8
#: keep ESPIRiT's second map set when its support is at least this fraction of the first set's
SECOND_SET_FRACTION = 0.05
CROP = 0.95


@dataclass
class Calibration:
    """Coil maps and how they were obtained.

    Attributes:
        maps: complex64 [C, H, W] (one set) or [M, C, H, W].
        n_maps: number of map sets M.
        method: "espirit" (measured centre), "nlinv+espirit" (centre completed by NLINV) or "single-coil".
        reason: why this method and this number of sets, in words.
        acs_width: fully sampled centre phase lines found in the data.
        second_set_fraction: support of ESPIRiT's second set over the first's.
        kernel: ESPIRiT kernel width.
    """

    maps: torch.Tensor
    n_maps: int
    method: str
    reason: str
    acs_width: int
    second_set_fraction: float
    kernel: int

    def record(self) -> dict:
        """JSON-ready summary (everything but the maps)."""
        return {"method": self.method, "n_maps": self.n_maps, "reason": self.reason, "acs_width": self.acs_width,
                "second_set_fraction": self.second_set_fraction, "kernel": self.kernel}


def _pattern(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return sampled_pattern(y)
    m = mask.to(y.device) > 0
    return m.expand(y.shape[-2:]) if m.dim() == 1 else m


def nlinv_filled_centre(y: torch.Tensor, mask: torch.Tensor | None = None, width: int = 24) -> torch.Tensor:
    """k-space whose centre ``width`` phase lines are complete: measured samples where present, NLINV's
    prediction ``F(rho c_j)`` (`operators.nlinv`) where not. complex64 [C, H, W], other lines as ``y``."""
    pattern = _pattern(y, mask)
    res = nlinv(y, pattern.float())
    pred = fft2c(res.image * res.maps)
    n = y.shape[-1]
    band = torch.zeros(n, dtype=torch.bool, device=y.device)
    band[(n - width + 1) // 2: (n - width + 1) // 2 + width] = True
    fill = band[None, :] & ~pattern
    return torch.where(fill, pred, y).to(torch.complex64)


def single_coil(y: torch.Tensor, acs_width: int, n_maps: int | None = None) -> Calibration:
    """One coil (fastMRI's single-coil files: an emulated single coil, a combination of the array's coils that
    the scanner or fastMRI made): its image is the object, so the map is 1 on the whole grid; nothing to calibrate.

    Raises:
        CalibrationError: ``n_maps=2`` (one coil cannot separate two map sets).
    """
    if n_maps == 2:
        raise CalibrationError("--maps 2 needs several coils; a single-coil file has one (use --maps 1 or auto)")
    maps = torch.ones(y.shape, dtype=torch.complex64, device=y.device)
    return Calibration(maps, 1, "single-coil", "one coil: its image is the object (map 1 everywhere)", acs_width,
                       0.0, 0)


def calibrate(y: torch.Tensor, mask: torch.Tensor | None = None, n_maps: int | None = None,
              calib_width: int = 24, acquired_lines: int | None = None, noise_std: float = 0.0) -> Calibration:
    """Coil maps for undersampled multi-coil k-space (one coil: `single_coil`, the map 1 everywhere).

    Args:
        y: complex [C, H, W] centred k-space (H readout, W phase), zero where not sampled.
        mask: real [W] or [H, W] sampling pattern; None = where any coil is non-zero.
        n_maps: None chooses from the data; 1 or 2 asks for that many ESPIRiT sets.
        calib_width: wanted ESPIRiT calibration width (phase lines); the ACS width caps it.
        acquired_lines: phase lines that hold data (for the suggested centre fraction in errors).
        noise_std: k-space noise std per real/imaginary part (0 = unknown): ESPIRiT drops the calibration
            matrix's noise directions (`operators.espirit.espirit`).

    Returns: `Calibration` on the input's device.

    Raises:
        CalibrationError: fewer than `MIN_ACS` fully sampled centre lines, all-zero maps, or n_maps not
            in (None, 1, 2); `operators.espirit.NoSignalError` when the measured centre holds nothing above the
            noise (with ``noise_std``).
    """
    if n_maps not in (None, 1, 2):
        raise CalibrationError(f"n_maps must be 1, 2 or None (choose from the data), got {n_maps!r}")
    rows, width = acs_region(_pattern(y, mask).cpu().numpy())
    if y.shape[-3] == 1:
        return single_coil(y, width, n_maps)
    lines = acquired_lines or y.shape[-1]
    if width < MIN_ACS:
        raise CalibrationError(
            f"the fully sampled centre is {width} phase lines wide; coil calibration needs at least {MIN_ACS}: "
            f"sample more centre lines, e.g. --center-fraction {math.ceil(100 * MIN_ACS / lines) / 100:.2f} "
            f"or larger ({MIN_ACS} of {lines} lines)")
    if width >= ESPIRIT_MIN_ACS:   # (`espirit` tests the centre for signal above the noise itself)
        method, how, data = "espirit", f"ESPIRiT on the measured centre ({width} ACS lines >= {ESPIRIT_MIN_ACS})", y
    else:
        if noise_std > 0:  # noise alone: say so before NLINV makes a centre out of it
            measured_signal(y.detach().cpu().numpy(), (rows, width), kernel_for(width), noise_std)
        method = "nlinv+espirit"
        how = (f"ESPIRiT on a {calib_width}-line centre completed by NLINV ({width} ACS lines < {ESPIRIT_MIN_ACS}, "
               "too few for ESPIRiT alone)")
        data = nlinv_filled_centre(y, mask, calib_width)
    res = espirit(data, calib_width=calib_width, crop=CROP, n_maps=2, noise_std=noise_std)
    inside = float((res.eigvals[0] > CROP).sum())
    if inside == 0:
        raise CalibrationError(f"{how} gave all-zero coil maps: sample more centre lines, e.g. "
                               f"--center-fraction {math.ceil(100 * ESPIRIT_MIN_ACS / lines) / 100:.2f} or larger")
    frac = float((res.eigvals[1] > CROP).sum()) / inside
    if n_maps is None:
        m = 2 if frac >= SECOND_SET_FRACTION else 1
        why = (f"the second eigenvector set covers {frac:.1%} of the first's support "
               f"({'>=' if m == 2 else '<'} {SECOND_SET_FRACTION:.0%}: "
               f"{'wrap-around, two map sets' if m == 2 else 'one map set'})")
    else:
        m, why = n_maps, f"{n_maps} map set(s) requested"
    return Calibration(res.maps[0] if m == 1 else res.maps, m, method, f"{how}; {why}", width, frac, res.kernel)
