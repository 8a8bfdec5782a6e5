"""Measurement-noise estimation from multi-coil Cartesian k-space, without a noise scan.

`estimate_noise(kspace)` returns the std of each real/imaginary part of the k-space noise (file units;
the orthonormal centred FFT keeps it the same per sample in image space and after `reduce_readout`),
the coil noise covariance where the data give one, and a JSON record. Estimators, tried in this order:

``margin``
    Readout oversampling: the outer parts of the readout field of view hold no object. The sampled
    readout lines are transformed along the readout only (hybrid x-ky space: white noise of the same
    std, exact for any 1D phase undersampling); the margin rows outside the recon size, less an outer
    1/16 guard (the receiver's anti-alias filter attenuates noise there), are kept where their energy
    sits on the noise floor (rows crossed by the object are dropped).
``background``
    Fully sampled data: pixels of the zero-filled coil images whose coil-summed, 5x5-averaged energy sits
    on the noise floor (the lowest dense low-energy band, refined to be self-consistent; two-sided, so the
    filter roll-off at the readout edges is dropped too). Zero-padded phase edges scale the pixel noise
    variance by the sampled fraction, which is divided out. Not used on undersampled data: aliasing
    fills the background.
``calibration``
    The ESPIRiT calibration matrix (Hankel matrix of 6x6 k-space patches of the fully sampled centre: all
    readout rows x up to 32 centre lines, or the centre square of 2D masks, with a smaller kernel when the
    square is small): its Gram matrix is a low-rank signal part plus ``conj(Psi) (x) I`` (coil noise
    covariance, white across k-space). Alternating: whiten the coils with the current ``Psi``; the signal
    rank is the number of eigenvalues above the Marchenko-Pastur edge of a self-consistent noise level;
    ``Psi`` is refitted (least squares) to the Gram matrix restricted to the complement of the signal
    subspace; 3-6 iterations converge. Plain MP-PCA (Veraart et al., 2016), which assumes white coil noise,
    is 56-69 % low with correlated coils; a cross-validated null space of the unwhitened matrix 4-145 % off.
``wavelet``
    Donoho's MAD of the finest diagonal Haar coefficients of the zero-filled coil images (the mask's
    variance factor computed exactly). Not in the default order: the anatomy's edges bias it high
    (+11-31 % at SNR 200 fully sampled, +36-150 % undersampled); it is reported when asked for.

The order follows measured accuracy on simulated slices with known noise (``benchmarks/noise_estimation.py``,
``benchmarks/results/noise_estimation.md``: 3 levels x 8/16 coils x readout oversampling x correlated coils x
full/4x sampling): margin and background within 0.3 %, calibration within 2.4 % (2D Poisson: 6 %). On the
real 8-coil T1 file background and calibration agree within 2 % (std ~7 in file units).

When no estimator applies or every estimate is at float round-off (no noise in the data: e.g. zero
margins and a calibration matrix without noise), the fallback is ``std = 0`` (noiseless data
consistency, the behaviour before noise estimation), with a `NoiseEstimationWarning` naming the source,
recorded in the JSON.

Coil noise covariance and pre-whitening: every estimator except ``wavelet`` also returns the coil noise
covariance ``Psi = E[n n^H]`` ([C, C]). `whiten` applies ``sqrt(tr Psi / C) Psi^{-1/2}`` to k-space: the
whitened coils have independent noise of the original mean variance, so the std is unchanged. It is a
helper, not applied by default: on the real T1 file (coil correlations up to 0.33) it lowers CG-SENSE's
noise error by 3 % (18.0 -> 17.4 %) while scaling the RSS image by a smooth factor 0.75-1.18 (median 0.91),
which metrics against fastMRI's unwhitened RSS targets would count as error; on simulated arrays with
stronger correlation (eigenvalues of the correlation matrix down to 0.15) the gain is 30-40 %.
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field

import torch

from operators.espirit import acs_region, calibration_matrix, sampled_pattern
from operators.fft import ifft2c

#: estimators, in the order `estimate_noise` tries them by default
AUTO_ORDER: tuple[str, ...] = ("margin", "background", "calibration")
METHODS: tuple[str, ...] = AUTO_ORDER + ("wavelet",)
#: an estimate below this fraction of the k-space RMS is float round-off, not noise
NOISE_FREE_REL = 1e-5
FALLBACK = "noise_std = 0 (noiseless data consistency)"


class NoiseEstimationWarning(UserWarning):
    """No noise could be estimated from the data; a fallback was used."""


class NoiseEstimationError(ValueError):
    """The k-space given to `estimate_noise` is not usable (shape, dtype, NaN/Inf)."""


@dataclass(frozen=True)
class NoiseEstimate:
    """What `estimate_noise` found.

    Attributes:
        std: noise std of each real/imaginary part of a k-space sample, in the file's k-space units
            (``sqrt(tr Psi / 2C)``: the coils' mean noise variance); 0 for the noiseless fallback.
        method: the estimator used ("margin", "background", "calibration", "wavelet") or "fallback".
        estimates: std from every estimator that ran.
        skipped: why each estimator that did not give a result was not used.
        coil_std: per-coil std of each real/imaginary part, or None.
        coil_cov: complex128 [C, C] coil noise covariance ``E[n n^H]`` (2 std^2 on average on the diagonal), or None.
        n_samples: noise samples per coil behind the chosen estimate.
        warning: the fallback warning, or None.
        source: what was estimated (a file and slice), for messages.
    """

    std: float
    method: str
    estimates: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    coil_std: tuple[float, ...] | None = None
    coil_cov: torch.Tensor | None = None
    n_samples: int = 0
    warning: str | None = None
    source: str = "k-space"

    def to_json(self) -> dict:
        """A JSON-ready record: std, method, per-estimator estimates, skipped reasons, coil noise, warning."""
        out = {"std": self.std, "method": self.method, "estimates": dict(self.estimates),
               "skipped": dict(self.skipped), "n_samples": self.n_samples, "warning": self.warning,
               "fallback": FALLBACK if self.method == "fallback" else None, "source": self.source,
               "coil_std": None if self.coil_std is None else [round(s, 6) for s in self.coil_std]}
        if self.coil_cov is not None:
            d = self.coil_cov.diagonal().real.clamp_min(1e-300).sqrt()
            corr = (self.coil_cov / (d[:, None] * d[None, :])).abs()
            off = corr[~torch.eye(len(d), dtype=torch.bool)]
            out["coil_corr_max"] = round(float(off.max()), 4) if off.numel() else 0.0
            out["coil_cov"] = {"re": self.coil_cov.real.tolist(), "im": self.coil_cov.imag.tolist()}
        return out


class _NotApplicable(Exception):
    """An estimator cannot be used on these data (the message says why)."""


@dataclass
class _Stats:
    cov: torch.Tensor   # complex128 [C, C], E[n n^H]
    n: int              # noise samples per coil

    @property
    def std(self) -> float:
        return float(self.cov.diagonal().real.mean().div(2).sqrt())


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _ifft1c(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(x, dim=dim), dim=dim, norm="ortho"), dim=dim)


def _cov(z: torch.Tensor, scale: float = 1.0) -> _Stats:
    """Noise samples z complex [C, N] (each sample's variance scaled by `scale`) -> covariance."""
    z = z.to(torch.complex128)
    return _Stats(z @ z.conj().T / (z.shape[1] * scale), int(z.shape[1]))


def _floor(e: torch.Tensor, rel_sd: float, lower: float = 0.25, tau: float = 4.0, iters: int = 30) -> torch.Tensor:
    """The noise floor of positive energies e [N]: bool [N].

    Starts at the lowest band of width ``2 rel_sd`` (log scale; `rel_sd` the relative spread of noise-only
    energies) that holds at least half as many values as the densest such band within the lowest `lower`
    fraction of the values (the noise floor lies below most of the object and is dense),
    then keeps the band ``|log e - centre| <= tau * sd`` self-consistent, sd the band's robust spread (at least
    `rel_sd`). Two-sided: attenuated noise (filter roll-off) is dropped as well as weak signal."""
    le = torch.log(e.double().clamp_min(1e-300))
    srt = torch.sort(le).values
    srt = srt[: max(int(lower * len(srt)), 1)]
    ends = torch.searchsorted(srt, srt + 2 * rel_sd)
    counts = ends - torch.arange(len(srt))
    i = int((counts >= 0.5 * counts.max()).nonzero()[0])
    centre, sd = float(srt[i: int(ends[i])].median()), rel_sd
    sel = torch.zeros_like(le, dtype=torch.bool)
    for _ in range(iters):
        new = (le - centre).abs() <= tau * sd
        if int(new.sum()) < 2 or torch.equal(new, sel):
            break
        sel, centre = new, float(le[new].mean())
        sd = max(rel_sd, 1.4826 * float((le[new] - le[new].median()).abs().median()))
    return sel


def _line_columns(k: torch.Tensor) -> torch.Tensor:
    """bool [W]: phase columns sampled along the whole readout."""
    return sampled_pattern(k).all(0)


def _fully_sampled(k: torch.Tensor) -> bool:
    """Every column between the first and last sampled one is sampled along the whole readout."""
    cols = sampled_pattern(k).any(0).nonzero().flatten()
    return len(cols) > 0 and bool(_line_columns(k)[int(cols[0]): int(cols[-1]) + 1].all())


# ---------------------------------------------------------------------------------------------------------
# estimators: k complex [C, H, W] -> _Stats, or raise _NotApplicable
# ---------------------------------------------------------------------------------------------------------
def margin_noise(k: torch.Tensor, readout_size: int | None, guard: float = 1 / 16) -> _Stats:
    """Readout-oversampled margins, in hybrid space (inverse FFT along the readout of the sampled lines)."""
    c, h, _ = k.shape
    if readout_size is None or h < readout_size + 8:
        raise _NotApplicable("readout not oversampled" if readout_size is None or h <= readout_size
                             else f"readout margins too small ({h} vs recon {readout_size})")
    cols = _line_columns(k)
    if not bool(cols.any()):
        raise _NotApplicable("no phase line sampled along the whole readout")
    top, g = (h - readout_size) // 2, int(round(h * guard))
    rows = torch.cat([torch.arange(g, top), torch.arange(top + readout_size, h - g)])
    if len(rows) < 4:
        raise _NotApplicable("readout margins too small")
    z = _ifft1c(k[:, :, cols].to(torch.complex128), dim=-2)[:, rows]       # [C, R, lines]
    sel = _floor(z.abs().pow(2).mean((0, 2)), rel_sd=1 / math.sqrt(z.shape[2]), lower=0.5)
    if int(sel.sum()) < 2:
        raise _NotApplicable("no margin row on a noise floor")
    return _cov(z[:, sel].reshape(c, -1))


def _box(x: torch.Tensor, b: int) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x[None, None], b, stride=1, padding=b // 2, count_include_pad=False)[0, 0]


def background_noise(k: torch.Tensor, box: int = 5, min_fraction: float = 0.005,
                     region: torch.Tensor | None = None) -> _Stats:
    """Noise-floor pixels of the zero-filled coil images (fully sampled data only); `region` (bool [H, W])
    restricts the candidate pixels."""
    c, h, w = k.shape
    if not _fully_sampled(k):
        raise _NotApplicable("undersampled: aliasing fills the image background")
    f = float(sampled_pattern(k).double().mean())
    img = ifft2c(k.to(torch.complex128)).reshape(c, -1)
    energy = _box(img.abs().pow(2).sum(0).reshape(h, w), box).flatten()
    idx = torch.arange(h * w) if region is None else region.flatten().nonzero().flatten()
    sel = idx[_floor(energy[idx], rel_sd=1 / (box * math.sqrt(c * f)))]
    if len(sel) < max(min_fraction * h * w, 10 * c):
        raise _NotApplicable(f"too few background pixels ({len(sel)})")
    return _cov(img[:, sel], scale=f)


def _calib_block(k: torch.Tensor, max_width: int) -> torch.Tensor:
    """The fully sampled centre found by `operators.espirit.acs_region`: all its readout rows (at most
    `max_width` for 2D sampling) x at most `max_width` of its lines, centred."""
    (c, h, w), (rows, lines) = k.shape, acs_region(sampled_pattern(k))
    rows = rows if rows == h else min(rows, max_width)
    lines = min(lines, max_width)
    top, left = (h - rows + 1) // 2, (w - lines + 1) // 2
    return k[:, top: top + rows, left: left + lines]


def _edge_rank(lam: torch.Tensor, beta: float, slack: float = 1.05) -> int:
    """Eigenvalues (of a Gram / rows) above the Marchenko-Pastur edge of a self-consistent white-noise level."""
    s, edge = float(lam.median()), (1 + math.sqrt(beta)) ** 2 * slack
    for _ in range(100):
        below = lam[lam < s * edge]
        s_new = float(below.mean()) if below.numel() else s
        if abs(s_new - s) <= 1e-9 * abs(s):
            break
        s = s_new
    return int((lam >= s * edge).sum())


def _fit_kron(nw: torch.Tensor, proj: torch.Tensor, c: int) -> torch.Tensor:
    """Least-squares Psi [c, c] with ``proj (Psi (x) I_K) proj ~ nw`` (both [cK, cK], proj a projector)."""
    kk = proj.shape[0] // c
    p4 = proj.reshape(c, kk, c, kk)
    # normal equations: M[(a,b),(a',b')] = sum_{l,m} P[(a,l),(a',m)] P[(b',m),(b,l)], rhs[a,b] = sum_l nw[(a,l),(b,l)]
    x = p4.permute(0, 2, 1, 3).reshape(c * c, kk * kk)
    y = p4.permute(3, 1, 2, 0).reshape(kk * kk, c * c)
    mat = (x @ y).reshape(c, c, c, c).permute(0, 2, 1, 3).reshape(c * c, c * c)
    rhs = torch.einsum("alBl->aB", nw.reshape(c, kk, c, kk)).reshape(c * c)
    psi = torch.linalg.lstsq(mat, rhs[:, None]).solution.reshape(c, c)
    return (psi + psi.conj().T) / 2


def _clamp_psd(psi: torch.Tensor, floor: float = 1e-2) -> torch.Tensor:
    """Hermitian part of psi with eigenvalues at least `floor` x their mean."""
    ev, vec = torch.linalg.eigh((psi + psi.conj().T) / 2)
    ev = ev.clamp_min(floor * float(ev.clamp_min(0).mean()))
    return (vec * ev) @ vec.conj().T


def _inv_sqrt(psi: torch.Tensor, power: float) -> torch.Tensor:
    ev, vec = torch.linalg.eigh(psi)
    ev = ev.clamp_min(float(ev.max()) * 1e-10 + 1e-300)
    return (vec * ev.pow(power)) @ vec.conj().T


def calibration_noise(k: torch.Tensor, kernel: int = 6, max_width: int = 32, iters: int = 15) -> _Stats:
    """Null space of the calibration matrix with a coil covariance fitted jointly (see the module docstring).
    The kernel shrinks (down to 3x3) when the fully sampled centre is too small for 2x as many patches as
    kernel entries (2D masks: a small calibration square)."""
    c = k.shape[0]
    block = _calib_block(k, max_width).to(torch.complex128)
    r, w = block.shape[1:]
    for kw in range(kernel, 2, -1):
        m, n = (r - kw + 1) * (w - kw + 1), c * kw * kw
        if min(r, w) >= kw + 2 and m >= 2 * n:
            break
    else:
        raise _NotApplicable(f"fully sampled centre {r}x{w} too small for a calibration matrix with 2x as many "
                             f"patches as kernel entries (even 3x3 kernels, {c} coils)")
    kernel = kw
    a = torch.from_numpy(calibration_matrix(block.numpy(), kernel))
    g = a.conj().T @ a / m
    lam0 = torch.linalg.eigvalsh(g)
    if float(lam0[: n // 4].median()) <= NOISE_FREE_REL**2 * float(lam0.mean()):
        return _Stats(torch.zeros(c, c, dtype=g.dtype), m)            # no noise in the null space: round-off only
    q = max(block.shape[1] // 8, 1)                                     # start: outer readout rows
    edge = torch.cat([block[:, :q], block[:, -q:]], 1).reshape(c, -1)
    psi = _clamp_psd(edge @ edge.conj().T / edge.shape[1])
    eye = torch.eye(kernel * kernel, dtype=g.dtype)
    rank = -1
    for _ in range(iters):
        wk = torch.kron(_inv_sqrt(psi, -0.5), eye)
        gw = wk @ g @ wk.conj().T
        lam, u = torch.linalg.eigh(gw)
        lam, u = lam.flip(0).clamp_min(0), u.flip(1)
        new_rank = min(_edge_rank(lam, n / m), n // 2)      # at most half: keeps the fit below well posed
        proj = torch.eye(n, dtype=g.dtype) - u[:, :new_rank] @ u[:, :new_rank].conj().T
        half = _inv_sqrt(psi, 0.5)
        new = _clamp_psd(half @ _fit_kron(proj @ gw @ proj, proj, c) @ half.conj().T)
        done = new_rank == rank and float((new - psi).abs().max()) <= 1e-3 * float(psi.abs().max())
        psi, rank = new, new_rank
        if done:
            break
    return _Stats(psi.conj(), m)         # the Gram of patch rows holds conj(Psi) (x) I


def wavelet_noise(k: torch.Tensor) -> _Stats:
    """MAD of the finest diagonal Haar coefficients of the zero-filled coil images, per coil (no covariance)."""
    c, h, w = k.shape
    img = ifft2c(k.to(torch.complex128))[:, : h // 2 * 2, : w // 2 * 2]
    d = (img[:, 0::2, 0::2] - img[:, 1::2, 0::2] - img[:, 0::2, 1::2] + img[:, 1::2, 1::2]) / 2
    # noise variance of a coefficient: sum_k m(k) |psi_hat(k)|^2, |psi_hat|^2 = 4/N sin^2(pi u/H) sin^2(pi v/W)
    u = torch.arange(h, dtype=torch.float64) - h // 2
    v = torch.arange(w, dtype=torch.float64) - w // 2
    atom = 4 / (h * w) * torch.sin(math.pi * u / h)[:, None] ** 2 * torch.sin(math.pi * v / w)[None, :] ** 2
    factor = float((sampled_pattern(k).double() * atom).sum())
    if factor <= 0:
        raise _NotApplicable("no high-frequency samples")
    parts = torch.cat([d.real.reshape(c, -1), d.imag.reshape(c, -1)], 1)
    var = (parts.abs().median(1).values / 0.6744897501960817).pow(2) / factor
    return _Stats(torch.diag(2 * var).to(torch.complex128), parts.shape[1] // 2)


_ESTIMATORS = {
    "margin": lambda k, ro: margin_noise(k, ro),
    "background": lambda k, ro: background_noise(k),
    "calibration": lambda k, ro: calibration_noise(k),
    "wavelet": lambda k, ro: wavelet_noise(k),
}


# ---------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------
def estimate_noise(
    kspace: torch.Tensor,
    *,
    readout_size: int | None = None,
    methods: tuple[str, ...] = AUTO_ORDER,
    run_all: bool = False,
    source: str = "k-space",
    warn: bool = True,
) -> NoiseEstimate:
    """Estimate the k-space noise of one multi-coil slice.

    Args:
        kspace: complex [C, H, W] = [coils, readout, phase], centred, raw: possibly readout-oversampled,
            possibly undersampled or zero-padded (zeros where not sampled).
        readout_size: the recon readout size (fastMRI header ``recon_size[0]``); with ``H > readout_size`` the
            readout is oversampled and the margins are used.
        methods: estimators to try, in order of preference (see `METHODS`).
        run_all: run every estimator in `methods` (their results go to ``estimates``); the first usable one
            in order is still the one chosen.
        source: names the data in messages (e.g. ``"file.h5 slice 3"``).
        warn: emit the `NoiseEstimationWarning` of the fallback (it is recorded either way).

    Returns:
        `NoiseEstimate`; ``std = 0`` with ``method = "fallback"`` and a warning when no noise is found.
    """
    k = torch.as_tensor(kspace)
    if k.dim() != 3 or not k.is_complex():
        raise NoiseEstimationError(f"{source}: expected complex k-space [C, H, W], got {tuple(k.shape)} {k.dtype}")
    if not bool(torch.isfinite(torch.view_as_real(k)).all()):
        raise NoiseEstimationError(f"{source}: k-space contains NaN or Inf")
    unknown = [m for m in methods if m not in _ESTIMATORS]
    if unknown:
        raise NoiseEstimationError(f"unknown noise estimator(s) {unknown}; choose from {METHODS}")
    k = k.detach().cpu()
    sampled = k[:, sampled_pattern(k)]
    rms = float(sampled.abs().pow(2).mean().sqrt()) if sampled.numel() else 0.0
    estimates, skipped, chosen = {}, {}, None
    for name in methods:
        if chosen is not None and not run_all:
            break
        try:
            st = _ESTIMATORS[name](k, readout_size)
        except _NotApplicable as e:
            skipped[name] = str(e)
            continue
        estimates[name] = st.std
        if not st.std > NOISE_FREE_REL * rms:
            skipped[name] = f"estimate {st.std:.3g} is float round-off (< {NOISE_FREE_REL:g} x k-space RMS {rms:.3g})"
        elif chosen is None:
            chosen = (name, st)
    if chosen is None:
        why = "; ".join(f"{m}: {r}" for m, r in skipped.items()) or "no estimator given"
        msg = f"{source}: no measurement noise could be estimated ({why}); falling back to {FALLBACK}"
        if warn:
            warnings.warn(msg, NoiseEstimationWarning, stacklevel=2)
        return NoiseEstimate(0.0, "fallback", estimates, skipped, warning=msg, source=source)
    name, st = chosen
    coil_std = tuple(float(v) for v in st.cov.diagonal().real.div(2).clamp_min(0).sqrt())
    cov = None if name == "wavelet" else st.cov
    return NoiseEstimate(st.std, name, estimates, skipped, coil_std, cov, st.n, None, source)


def estimate_volume_noise(volume, slices: list[int] | None = None, **kwargs) -> tuple[float, list[NoiseEstimate]]:
    """Per-slice estimates of an open `recon.data.io.FastMRIVolume` and the per-file std (their median, over the
    slices that gave one; 0 when none did). `kwargs` go to `estimate_noise` (``readout_size`` defaults to
    the header's recon readout)."""
    kwargs.setdefault("readout_size", volume.header.recon_size[0])
    per = [estimate_noise(torch.from_numpy(volume.kspace[i]), source=f"{volume.path} slice {i}", **kwargs)
           for i in (range(volume.n_slices) if slices is None else slices)]
    found = [e.std for e in per if e.method != "fallback"]
    return (statistics.median(found) if found else 0.0), per


def rescale_record(record: dict | None, factor: float) -> dict | None:
    """A `NoiseEstimate.to_json` record for k-space multiplied by `factor` (e.g. back to file units after
    estimating on ``kspace / scale``: factor = scale): stds scale by `factor`, the covariance by its square."""
    if record is None:
        return None
    out = dict(record)
    out["std"] = record["std"] * factor
    out["estimates"] = {m: v * factor for m, v in record.get("estimates", {}).items()}
    if record.get("coil_std") is not None:
        out["coil_std"] = [s * factor for s in record["coil_std"]]
    if record.get("coil_cov") is not None:
        out["coil_cov"] = {part: [[v * factor**2 for v in row] for row in rows]
                           for part, rows in record["coil_cov"].items()}
    return out


def whitening_matrix(coil_cov: torch.Tensor) -> torch.Tensor:
    """``sqrt(tr Psi / C) Psi^{-1/2}`` (Hermitian square root): coil noise becomes independent with the mean
    variance of the original coils, so the noise std and the image intensities keep their file units.
    coil_cov: complex [C, C] -> complex [C, C]."""
    psi = coil_cov.to(torch.complex128)
    return math.sqrt(float(psi.diagonal().real.mean())) * _inv_sqrt(psi, -0.5)


def whiten(kspace: torch.Tensor, coil_cov: torch.Tensor) -> torch.Tensor:
    """Pre-whiten multi-coil data [..., C, H, W] with `whitening_matrix(coil_cov)`; same dtype as the input."""
    w = whitening_matrix(coil_cov).to(kspace.device)
    return torch.einsum("ab,...bhw->...ahw", w.to(kspace.dtype), kspace)
