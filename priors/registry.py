"""Bundled priors and prior files: ``load(name_or_path)``, ``available()``.

A prior file (written by `priors.training.export_prior`) is one ``torch.save`` dict:
``format_version``, ``kind="edm-unet"``, ``net_config``, ``info`` (`PriorInfo`), ``state_dict``
(EMA weights) and ``meta`` (steps, wall time, final loss, data). Bundled files live in
``priors/weights/`` and are listed in ``priors/weights/registry.json`` with their sha256,
which `load` verifies before unpickling anything.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from priors.base import EDMPrior, Prior, PriorInfo
from priors.checkpoints import CheckpointError  # corrupt, modified (sha256) or inconsistent file
from priors.networks.unet import UNet, UNetConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REGISTRY_FILE = WEIGHTS_DIR / "registry.json"
SUPPORTED_FORMAT = 1
#: per bundled prior, the smallest sigma where bf16 denoising of the held-out crops stays within 0.05 dB PSNR
#: of float32 (worst measured deficit at and above it: brain 0.025 dB, head CT 0.029 dB; below it the CT prior
#: loses up to 0.21 dB at sigma 0.01); pinned by tests/priors/test_priors.py
BF16_MIN_SIGMA: dict[str, float] = {"brain-mri-complex": 0.02, "head-ct": 0.1}


class UnknownPriorError(KeyError):
    """No bundled prior has that name and no file exists at that path."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def read_registry(path: Path = REGISTRY_FILE) -> dict[str, dict[str, Any]]:
    """``{name: {"file", "sha256", "value_kind", "modality", "description", ...}}`` of bundled priors."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def is_prior_entry(entry: dict[str, Any]) -> bool:
    """Registry entries without a ``kind`` (or ``kind == "edm-unet"``) are score priors; others
    (e.g. supervised U-Net baselines) share the file but are not loaded here."""
    return entry.get("kind", "edm-unet") == "edm-unet"


def available(path: Path = REGISTRY_FILE) -> list[str]:
    """Names of the bundled score priors (sorted)."""
    return sorted(n for n, e in read_registry(path).items() if is_prior_entry(e))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prior_from_dict(obj: dict[str, Any], device: str | torch.device = "cpu") -> EDMPrior:
    """Build an `EDMPrior` (float32, eval mode) from a loaded prior-file dict."""
    if not isinstance(obj, dict) or obj.get("kind") != "edm-unet":
        raise CheckpointError("not a prior file: expected a dict with kind='edm-unet' "
                              "(training checkpoints must be exported first, see priors.training.export_prior)")
    if obj.get("format_version") != SUPPORTED_FORMAT:
        raise CheckpointError(f"prior file format {obj.get('format_version')} is not supported "
                              f"(this version reads {SUPPORTED_FORMAT})")
    try:
        cfg = UNetConfig.from_dict(obj["net_config"])
        info = PriorInfo.from_dict(obj["info"])
        net = UNet(**cfg.to_dict())
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()})
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"prior file does not match its recorded network config: {e}") from e
    expected_ch = 2 if info.value_kind == "complex" else 1
    if cfg.in_channels != expected_ch or cfg.out_channels != expected_ch:
        raise CheckpointError(f"config has {cfg.in_channels} channels but value_kind '{info.value_kind}' "
                              f"needs {expected_ch}")
    prior = EDMPrior(net, info).to(device).eval()
    prior.requires_grad_(False)
    prior.meta = dict(obj.get("meta", {}))
    return prior


def sha256_file(path: Path | str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks (published checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_verified(path: Path | str, sha256: str | None = None, what: str = "prior") -> Any:
    """``torch.load`` (weights only) of a weights file; with ``sha256`` its bytes must hash to it first."""
    data = Path(path).read_bytes()
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise CheckpointError(f"sha256 of {path} is {sha256_bytes(data)}, expected {sha256}: "
                              "the file is corrupt or was replaced; restore it or reinstall the package")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad pickle
        raise CheckpointError(f"cannot read {what} file {path}: {e}") from e


def write_weights(obj: dict[str, Any], path: Path | str) -> str:
    """``torch.save`` a weights dict to `path` (through a temporary name, so no half-written file is left);
    returns the sha256 of the bytes written, for the registry and `read_verified`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return sha256_bytes(data)


def load_file(path: Path | str, sha256: str | None = None, device: str | torch.device = "cpu") -> EDMPrior:
    """Load a prior file; with ``sha256`` the file's bytes must hash to it."""
    return prior_from_dict(read_verified(path, sha256, "prior"), device)


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> Prior:
    """A bundled prior by name (sha256-verified) or a prior file by path.

    Raises `UnknownPriorError` (listing the bundled names) when neither exists, and
    `CheckpointError` for a modified, corrupt or inconsistent file.
    """
    reg = {n: e for n, e in read_registry().items() if is_prior_entry(e)}
    key = str(name_or_path)
    if key in reg:
        entry = reg[key]
        prior = load_file(WEIGHTS_DIR / entry["file"], sha256=entry["sha256"], device=device)
        prior.bf16_min_sigma = BF16_MIN_SIGMA.get(key, prior.bf16_min_sigma)
        return prior
    p = Path(name_or_path)
    if p.is_file():
        return load_file(p, device=device)
    raise UnknownPriorError(f"unknown prior '{key}': not a bundled name and no such file. "
                            f"Bundled priors: {', '.join(sorted(reg)) or '(none)'}")


def describe() -> str:
    """One line per bundled prior (for ``recon priors``)."""
    lines = []
    for name, e in sorted((n, e) for n, e in read_registry().items() if is_prior_entry(e)):
        lines.append(f"{name:20s} {e.get('value_kind', '?'):8s} {e.get('modality', '?'):4s} "
                     f"{e.get('size_mb', 0):5.1f} MB  {e.get('description', '')}")
    return "\n".join(lines) or "(no bundled priors)"
