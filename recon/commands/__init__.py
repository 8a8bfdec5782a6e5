"""The `recon` subcommands, one module each, and the argument checks they share."""
from __future__ import annotations


def device_error(name: str) -> str | None:
    """Why ``--device NAME`` cannot be used on this machine, or None when it can: no CUDA device, a CUDA index
    beyond the visible GPUs, a device type this PyTorch build lacks, or a name PyTorch does not know."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {name}: no CUDA device is available"
    try:
        torch.empty(0, device=name)
    except (RuntimeError, ValueError, AssertionError) as e:
        return f"--device {name}: PyTorch cannot use it here ({str(e).split('. ')[0].splitlines()[0][:200]})"
    return None
