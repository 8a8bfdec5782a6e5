"""The `Prior` interface: a denoiser at a noise level, in variance-exploding form.

Every network family is converted at this boundary so that solvers reason in
one parameterisation (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models"; Song et al. 2021, score SDEs):

    x = x0 + sigma * n,   n ~ N(0, I)  (each of the real and imaginary parts for complex data)
    denoise(x, sigma) = E[x0 | x]                 (Tweedie / MMSE estimate)
    score(x, sigma)   = (denoise(x, sigma) - x) / sigma**2

Adapters:
    * `EDMPrior`       EDM-preconditioned denoisers (our own networks)
    * `VEScorePrior`   score networks trained with a VE SDE (NCSN / NCSN++, sigma-conditioned)
    * `VPEpsilonPrior` epsilon-prediction networks trained with a VP/DDPM schedule (ADM)
    * `GaussianPrior`  the exact MMSE denoiser of a Gaussian prior (tests, sanity checks)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

ValueKind = Literal["complex", "real"]


class PriorMismatchError(ValueError):
    """An input does not fit a prior (value kind, modality, shape)."""


@dataclass(frozen=True)
class PriorInfo:
    """What a prior expects and where it came from.

    Attributes:
        name: registry name, e.g. ``"brain-mri-complex"``.
        value_kind: ``"complex"`` (complex images, 2 channels inside) or ``"real"``.
        modality: ``"mri"`` or ``"ct"`` (or ``"any"`` for analytic priors).
        normalization: how images were scaled for training:
            ``"p99"``   -> the 99th percentile of the magnitude is 1;
            ``"fixed"`` -> images are divided by the constant `scale` (e.g. CT attenuation);
            ``"max"``   -> the maximum magnitude is 1 (the published score-MRI / DDS networks).
        scale: the constant for ``normalization == "fixed"`` (ignored otherwise).
        sigma_min, sigma_max: the noise range the network was trained for.
        sigma_data: EDM's data standard deviation (used by `EDMPrior`).
        resolution: training patch / image size (networks may accept any size).
        trained_on: a short description of the training data and splits.
    """

    name: str = "unnamed"
    value_kind: ValueKind = "complex"
    modality: str = "mri"
    normalization: str = "p99"
    scale: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    resolution: int = 64
    trained_on: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PriorInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _sigma_vector(sigma: torch.Tensor | float, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    s = torch.as_tensor(sigma, device=device, dtype=dtype).flatten()
    if s.numel() == 1:
        s = s.expand(batch)
    if s.numel() != batch:
        raise PriorMismatchError(f"sigma has {s.numel()} values for a batch of {batch} images")
    return s


@dataclass(frozen=True)
class InferencePolicy:
    """How a prior runs its network on a batch.

    Attributes:
        chunk: images per network call (None: the whole batch in one call).
        bf16: run the network under ``torch.autocast(dtype=torch.bfloat16)``; the preconditioning around it
            (input scaling, skip connection, ``x - sigma eps``) stays in the input's dtype and the network's
            output is cast back to it.
        channels_last: run the network's 4-D weights and input in ``torch.channels_last`` memory format
            (the same numbers up to float rounding; oneDNN's CPU convolutions are faster in it).
    """

    chunk: int | None = None
    bf16: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"InferencePolicy: chunk must be >= 1 or None, got {self.chunk}")


#: the same batch at once, float32: what every prior did before policies existed (benchmarks' "old path")
FULL_BATCH_FP32 = InferencePolicy(chunk=None, bf16=False)


def default_policy(device: torch.device | str) -> InferencePolicy:
    """The documented per-device rule.

    CPU: one image per call, bf16 allowed, channels-last memory format. On the idle 2-core development machine with the 256x256 brain
    prior, seconds per image were 0.195 / 0.265 / 0.386 / 0.44 at batch 1 / 2 / 4 / 8 (bigger batches fall
    out of cache and cost more per image) and 0.105 at batch 1 in bf16; on the same machine under load
    the ranking held (benchmarks/results/correctness_speed.md). Channels-last took one thread's image from
    0.63 to 0.58 s in float32 and from 0.38 to 0.29 s in bf16 (same machine, same run).
    CUDA and other devices: the whole batch in one call, float32 (bf16 is an opt-in `InferencePolicy`).

    "bf16 allowed" is not "bf16 used": a call runs in bf16 only at noise levels where the prior's bf16
    output was checked against float32 (`Prior.bf16_min_sigma`), see `Prior.denoise`.
    """
    if torch.device(device).type == "cpu":
        return InferencePolicy(chunk=1, bf16=True, channels_last=True)
    return FULL_BATCH_FP32


class Prior(nn.Module):
    """Base class: subclasses implement `_denoise` on ``[B, H, W]`` tensors with ``sigma: [B]``.

    `denoise` accepts any leading batch shape ``[..., H, W]`` (complex for complex priors,
    real for real priors), checks the value kind, counts network evaluations in `nfe`
    (one per call, however many images are in the batch) and returns the same shape.

    ``inference`` (an `InferencePolicy`, or None for `default_policy` of the input's device) sets the
    chunk size and precision of the network calls; subclasses call their network through `_network`.
    ``bf16_min_sigma``: the smallest noise level at which the network's bf16 output was checked to stay within
    0.05 dB PSNR of float32 on held-out crops (``inf``, never, until someone checks; the bundled priors get
    theirs from `priors.registry.load`). bf16 runs only when the policy allows it and every sigma of the
    call is at least this; below it (low noise, where bf16 rounding shows) the network runs in float32, and
    so does every call made with autograd enabled (gradients through the network, e.g. DPS).
    """

    def __init__(self, info: PriorInfo, inference: InferencePolicy | None = None):
        super().__init__()
        self.info = info
        self.nfe = 0
        self.inference = inference
        self.bf16_min_sigma = math.inf
        self._bf16 = False
        self._channels_last = False

    # -- public interface -------------------------------------------------
    def policy(self, device: torch.device | str) -> InferencePolicy:
        """The policy used for inputs on `device`."""
        return default_policy(device) if self.inference is None else self.inference

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """MMSE estimate ``E[x0 | x0 + sigma n = x]``; x: [..., H, W], sigma: float or [...]."""
        self.check_value_kind(x)
        lead, hw = x.shape[:-2], x.shape[-2:]
        xb = x.reshape(-1, *hw)
        s = _sigma_vector(sigma, xb.shape[0], x.device)
        self.nfe += 1
        pol = self.policy(x.device)
        # bf16 only where it was checked: forward values (not gradients through the network, as DPS takes)
        # at noise levels at or above bf16_min_sigma
        self._bf16 = pol.bf16 and not torch.is_grad_enabled() and bool(s.min() >= self.bf16_min_sigma)
        self._channels_last = pol.channels_last
        try:
            n = xb.shape[0]
            if pol.chunk is None or pol.chunk >= n:
                out = self._denoise(xb, s)
            else:
                out = torch.cat([self._denoise(xb[i: i + pol.chunk], s[i: i + pol.chunk])
                                 for i in range(0, n, pol.chunk)])
        finally:
            self._bf16 = self._channels_last = False
        return out.reshape(*lead, *hw)

    def _network(self, net: nn.Module, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """``net(x, *args)`` under the current policy's precision and memory format; returns x's dtype.

        x: real [B, C, H, W]. With a channels-last policy the network's 4-D weights are converted in place
        when one of them is not channels-last yet, and so is x.
        """
        if self._channels_last and x.dim() == 4:
            fmt = torch.channels_last
            if any(p.dim() == 4 and not p.is_contiguous(memory_format=fmt) for p in net.parameters()):
                net.to(memory_format=fmt)
            x = x.contiguous(memory_format=fmt)
        if not self._bf16:
            return net(x, *args)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            out = net(x, *args)
        return out.to(x.dtype)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``(denoise(x, sigma) - x) / sigma^2``, the score of the noised marginal."""
        s = torch.as_tensor(sigma, device=x.device, dtype=torch.float32)
        s = s.reshape(*s.shape, *([1] * (x.dim() - s.dim()))) if s.dim() else s
        return (self.denoise(x, sigma) - x) / s**2

    def check_value_kind(self, x: torch.Tensor) -> None:
        if self.info.value_kind == "complex" and not x.is_complex():
            raise PriorMismatchError(f"prior '{self.info.name}' is complex but got a real {x.dtype} image")
        if self.info.value_kind == "real" and x.is_complex():
            raise PriorMismatchError(f"prior '{self.info.name}' is real but got a complex {x.dtype} image")

    def estimate_scale(self, image: torch.Tensor) -> float:
        """The factor that brings `image` (data scale) to the prior's scale: ``x_prior = image / scale``."""
        if self.info.normalization == "fixed":
            return float(self.info.scale)
        if self.info.normalization == "p99":
            return p99_scale(image)
        if self.info.normalization == "max":
            return max(float(image.detach().abs().max()), 1e-12)
        raise PriorMismatchError(f"unknown normalization '{self.info.normalization}' in prior '{self.info.name}'")

    def reset_nfe(self) -> None:
        self.nfe = 0

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def p99_scale(image: torch.Tensor) -> float:
    """99th percentile of ``|image|`` (at least a tiny positive number)."""
    mag = image.detach().abs().flatten().float()
    if mag.numel() > 2_000_000:
        mag = mag[:: mag.numel() // 2_000_000 + 1]
    return max(float(torch.quantile(mag, 0.99)), 1e-12)


# ---------------------------------------------------------------------------
# channel packing
# ---------------------------------------------------------------------------
def to_channels(x: torch.Tensor) -> torch.Tensor:
    """complex [B, H, W] -> real [B, 2, H, W] (real, imag); real [B, H, W] -> [B, 1, H, W]."""
    if x.is_complex():
        return torch.stack([x.real, x.imag], dim=1)
    return x.unsqueeze(1)


def from_channels(x: torch.Tensor, complex_out: bool) -> torch.Tensor:
    """Inverse of `to_channels`."""
    if complex_out:
        return torch.complex(x[:, 0], x[:, 1])
    return x[:, 0]


# ---------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------
class EDMPrior(Prior):
    """EDM preconditioning (Karras et al. 2022, Table 1):

        D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s))
        c_skip = sd^2 / (s^2 + sd^2),  c_out = s sd / sqrt(s^2 + sd^2),
        c_in = 1 / sqrt(s^2 + sd^2),   c_noise = log(s) / 4

    `net(x [B, C, H, W], c_noise [B]) -> [B, C, H, W]`.
    """

    def __init__(self, net: nn.Module, info: PriorInfo):
        super().__init__(info)
        self.net = net

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xc = to_channels(x)
        s = sigma.to(xc.dtype).reshape(-1, 1, 1, 1)
        sd = self.info.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.to(xc.dtype).log() / 4
        d = c_skip * xc + c_out * self._network(self.net, c_in * xc, c_noise)
        return from_channels(d, x.is_complex())


class VEScorePrior(Prior):
    """A VE score network (Song et al. 2021; score-MRI): ``net(x, sigma) ~ grad log p_sigma(x)``.

    ``denoise = x + sigma^2 * net(x, sigma)`` (Tweedie's formula).
    """

    def __init__(self, net: nn.Module, info: PriorInfo):
        super().__init__(info)
        self.net = net

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xc = to_channels(x)
        s = sigma.to(xc.dtype)
        d = xc + s.reshape(-1, 1, 1, 1) ** 2 * self._network(self.net, xc, s)
        return from_channels(d, x.is_complex())


class VPEpsilonPrior(Prior):
    """An epsilon-prediction network trained with a VP/DDPM schedule (Ho et al. 2020; ADM; DDS).

    With ``abar_t`` the cumulative product of ``1 - beta_t``:
        sigma_t = sqrt((1 - abar_t) / abar_t),   x_vp = sqrt(abar_t) * x_ve,
        denoise(x_ve, sigma) = x_ve - sigma * eps(x_vp, t).
    Nets that take integer steps get the step whose sigma_t is nearest to sigma
    (in log sigma), and that step's own sigma_t scales the input and forms ``x - sigma_t * eps``
    (`effective_sigma`): the network's eps is the noise at level sigma_t, so mixing it with the
    requested sigma would mis-scale the estimate (up to 20% at low noise, where steps are far apart
    in log sigma). `out_channels` keeps the first C output channels (``learn_sigma``).
    """

    def __init__(
        self,
        net: nn.Module,
        info: PriorInfo,
        alphas_cumprod: torch.Tensor,
        integer_timesteps: bool = True,
    ):
        super().__init__(info)
        self.net = net
        self.register_buffer("alphas_cumprod", alphas_cumprod.double(), persistent=False)
        self.integer_timesteps = integer_timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t for t = 0..T-1 (float64)."""
        a = self.alphas_cumprod
        return ((1 - a) / a).sqrt()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Timestep for each sigma: nearest index (integer nets) or interpolated (continuous)."""
        logs = self.sigmas.log().to(sigma.device)
        ls = sigma.double().clamp_min(1e-12).log()
        if self.integer_timesteps:
            return (logs[None, :] - ls[:, None]).abs().argmin(1).to(torch.float32)
        idx = torch.searchsorted(logs, ls.clamp(logs[0], logs[-1])).clamp(1, len(logs) - 1)
        w = (ls - logs[idx - 1]) / (logs[idx] - logs[idx - 1])
        return (idx - 1 + w).to(torch.float32)

    def effective_sigma(self, sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The sigma the network is told about: ``sigma_t`` of the nearest step for integer nets
        (t: float32 [B] holding integers), the requested sigma for continuous ones. float32 [B]."""
        if not self.integer_timesteps:
            return sigma.to(torch.float32)
        return self.sigmas.to(t.device)[t.long()].to(torch.float32)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xc = to_channels(x)
        c = xc.shape[1]
        t = self.timestep(sigma)
        s = self.effective_sigma(sigma, t).to(xc.dtype).reshape(-1, 1, 1, 1)
        abar = 1 / (1 + s**2)
        eps = self._network(self.net, abar.sqrt() * xc, t)[:, :c]
        return from_channels(xc - s * eps, x.is_complex())


def linear_beta_alphas_cumprod(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """``abar_t = prod(1 - beta)`` for DDPM's linear schedule (float64, [n])."""
    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class GaussianPrior(Prior):
    """Exact MMSE denoiser of a Gaussian prior, diagonal in a known basis.

    ``basis="fourier"``: x0 = mean + ifft2c(sqrt(var) * w), w complex white (each part N(0,1)),
    so every centred-FFT coefficient has per-part variance ``var [H, W]`` (complex priors only).
    ``basis="pixel"``: x0 = mean + sqrt(var) * w, independent pixels (real or complex).

    denoise(x, s) = mean + T^H[ var / (var + s^2) * T(x - mean) ], T the basis transform.
    """

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, basis: str = "fourier", info: PriorInfo | None = None):
        kind: ValueKind = "complex" if mean.is_complex() else "real"
        if basis == "fourier" and kind != "complex":
            raise PriorMismatchError("a Fourier-diagonal GaussianPrior must be complex")
        super().__init__(info if info is not None else PriorInfo(name="gaussian", value_kind=kind, modality="any", normalization="fixed",
                                           sigma_min=1e-3, sigma_max=100.0, resolution=mean.shape[-1]))
        self.register_buffer("mean", mean)
        self.register_buffer("var", var.float())
        self.basis = basis
        self.inference = FULL_BATCH_FP32  # closed form, no network: one exact call for the whole batch

    def _fwd(self, x: torch.Tensor) -> torch.Tensor:
        from operators.fft import fft2c
        return fft2c(x) if self.basis == "fourier" else x

    def _inv(self, x: torch.Tensor) -> torch.Tensor:
        from operators.fft import ifft2c
        return ifft2c(x) if self.basis == "fourier" else x

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = sigma.reshape(-1, 1, 1) ** 2
        gain = self.var / (self.var + s2)
        return self.mean + self._inv(gain * self._fwd(x - self.mean))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the prior, [n, H, W]."""
        shape = (n, *self.mean.shape)
        w = standard_noise(torch.empty(shape, dtype=self.mean.dtype, device=self.mean.device), generator)
        return self.mean + self._inv(self.var.sqrt() * w)


def standard_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """White noise in the priors' convention: N(0, 1) in each of the real and imaginary parts."""
    if like.is_complex():
        real_dtype = torch.float64 if like.dtype == torch.complex128 else torch.float32
        re = torch.randn(like.shape, dtype=real_dtype, generator=generator, device=like.device)
        im = torch.randn(like.shape, dtype=real_dtype, generator=generator, device=like.device)
        return torch.complex(re, im)
    return torch.randn(like.shape, dtype=like.dtype, generator=generator, device=like.device)
