"""Baselines by command-line name and modality.

Every baseline is built from the forward operator and the measurement, as sigpy's apps are:

    post = baseline("l1-wavelet", "mri")(A, y, lam=3e-4)      # -> Posterior (mean only)

``A`` is the operator the baseline fits (MRI: a `operators.mri.MultiCoilMRI` holding ``maps`` and
``mask``; CT: the projector, or the Poisson-weighted one for ``weighted`` baselines) and ``y`` the
measurement in that operator's range; everything else is a keyword hyper-parameter. Modules register
their baselines with `register` when `recon.baselines` is imported; the table is not changed afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

import torch

from operators.base import LinearOperator
from solvers.posterior import Posterior

MODALITIES = ("mri", "ct")

#: the keywords a caller supplies from its problem and settings rather than from hyper-parameters
SUPPLIED = ("net", "crop", "unit", "noise_std")

BaselineFn = Callable[..., Posterior]
F = TypeVar("F", bound=BaselineFn)


@dataclass(frozen=True)
class Baseline:
    """One registered baseline.

    Attributes:
        name: the command-line name (``--solver``), e.g. ``"l1-wavelet"``.
        modality: ``"mri"`` or ``"ct"``.
        fn: ``fn(A, y, **hp) -> Posterior``.
        defaults: hyper-parameter values `recon.methods.run_method` uses where its settings give none
            (given values override them one by one).
        weighted: CT only: fit the Poisson-weighted data (`recon.problems.ct.CTProblem.data_op`,
            ``data_y``) instead of the raw sinogram.
        needs: keywords of `SUPPLIED` the caller fills: ``net`` (a trained U-Net), ``crop`` (the MRI
            reconstruction size (rH, rW)), ``unit`` (CT: attenuation of water per pixel), ``noise_std``
            (MRI: the k-space noise std per real/imaginary part in the units of ``y``, 0 when noiseless).
    """

    name: str
    modality: str
    fn: BaselineFn
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    weighted: bool = False
    needs: tuple[str, ...] = ()

    def hyper_parameters(self) -> dict[str, Any]:
        """{keyword: default}: the function's keywords after ``(A, y)``, without `SUPPLIED` ones and tensors
        (initial images), at the registered defaults where there are any."""
        import inspect

        params = list(inspect.signature(self.fn).parameters.values())[2:]
        return {p.name: self.defaults.get(p.name, p.default) for p in params
                if p.name not in SUPPLIED and "Tensor" not in str(p.annotation)}

    def __call__(self, A: LinearOperator, y: torch.Tensor, **hp: Any) -> Posterior:
        """Run the baseline on ``y`` [..., *A.range_shape]; returns a `Posterior` over [..., *A.domain_shape]."""
        return self.fn(A, y, **hp)


#: (name, modality) -> `Baseline`; filled by `register` when the baseline modules are imported
BASELINES: dict[tuple[str, str], Baseline] = {}


def register(name: str, *, modality: str, defaults: Mapping[str, Any] | None = None, weighted: bool = False,
             needs: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: register ``fn(A, y, **hp) -> Posterior`` under ``(name, modality)``; returns ``fn`` unchanged.

    Raises:
        ValueError: unknown modality or supplied keyword, or a name already registered for the modality.
    """
    if modality not in MODALITIES:
        raise ValueError(f"register: modality must be one of {MODALITIES}, got {modality!r}")
    unknown = sorted(set(needs) - set(SUPPLIED))
    if unknown:
        raise ValueError(f"register: {name}: needs {unknown} are not among the supplied keywords {SUPPLIED}")

    def add(fn: F) -> F:
        if (name, modality) in BASELINES:
            raise ValueError(f"register: baseline '{name}' is already registered for {modality}")
        BASELINES[(name, modality)] = Baseline(name, modality, fn, MappingProxyType(dict(defaults or {})),
                                               weighted, tuple(needs))
        return fn

    return add


def baseline(name: str, modality: str) -> Baseline:
    """The baseline registered as ``name`` for ``modality``.

    Raises:
        recon.methods.MethodError: no such baseline (``solver 'x' does not apply to MRI data``).
    """
    try:
        return BASELINES[(name, modality)]
    except KeyError:
        # recon.methods imports this package when a method runs, so its error type is imported here, not above
        from recon.methods import MethodError
        raise MethodError(f"solver '{name}' does not apply to {modality.upper()} data") from None


def baseline_names(modality: str) -> tuple[str, ...]:
    """The names registered for ``modality``, in registration order."""
    return tuple(n for n, m in BASELINES if m == modality)


def hyper_parameters(name: str) -> dict[str, Any]:
    """{keyword: default} a baseline takes as hyper-parameters (`Baseline.hyper_parameters`), over every modality it
    is registered for.

    Raises:
        recon.methods.MethodError: no baseline of that name.
    """
    entries = [b for (n, _), b in BASELINES.items() if n == name]
    if not entries:
        from recon.methods import MethodError
        raise MethodError(f"no baseline named '{name}'")
    out: dict[str, Any] = {}
    for b in entries:
        out.update(b.hyper_parameters())
    return out
