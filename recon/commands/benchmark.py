"""`recon benchmark --preset quick|targets|full --out DIR`: diffusion solvers against baselines on the test data.

Writes ``DIR/REPORT.md`` (tables, pass/fail targets, embedded figures), ``DIR/results.json`` and the PNG
figures. ``quick`` runs in minutes on a laptop CPU, ``targets`` in about an hour; ``full`` is meant for a GPU
or a long run.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from recon.commands import device_error

DEFAULT_PRIORS = {"mri": "brain-mri-complex", "ct": "head-ct"}
DEFAULT_UNETS = {"mri": "unet-brain-mri", "ct": "unet-head-ct"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["quick", "targets", "full"], default="quick",
                   help="quick: a few reduced slices and sweeps (CI, < 15 min on 2 CPU cores); targets: every "
                        "report target evaluated on a reduced test set (~1 h on 2 CPU cores); full: every slice "
                        "and solver (GPU / long run)")
    p.add_argument("--out", required=True, type=Path, help="output directory (REPORT.md, results.json, figures)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--modality", default="mri,ct", help="comma-separated subset of mri,ct")
    p.add_argument("--mri-prior", default=DEFAULT_PRIORS["mri"], help="bundled prior name or checkpoint path for MRI")
    p.add_argument("--ct-prior", default=DEFAULT_PRIORS["ct"], help="bundled prior name or checkpoint path for CT")
    p.add_argument("--mri-unet", default=DEFAULT_UNETS["mri"], help="U-Net baseline for MRI")
    p.add_argument("--ct-unet", default=DEFAULT_UNETS["ct"], help="U-Net baseline for CT")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: ../shared/data beside the project)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is fastest on a machine shared with other jobs)")
    p.add_argument("--quiet", action="store_true", help="no per-method progress lines")


class _Networks:
    """Loads each prior / U-Net once; a network that cannot be loaded is None, with a note for the report."""

    def __init__(self, args: argparse.Namespace, notes: list[str]):
        self.args, self.notes = args, notes
        self.priors: dict[str, Any] = {}
        self.unets: dict[str, Any] = {}

    def prior(self, modality: str, shape: tuple[int, ...]) -> Any:
        from priors.registry import load
        return self._cached(self.priors, modality, getattr(self.args, f"{modality}_prior"), load, "prior",
                            "posterior methods were skipped")

    def unet(self, modality: str) -> Any:
        from recon.baselines.unet import load_unet
        return self._cached(self.unets, modality, getattr(self.args, f"{modality}_unet"), load_unet, "U-Net",
                            "the `unet` baseline was skipped")

    def _cached(self, cache: dict[str, Any], modality: str, name: str, loader: Callable[..., Any], what: str,
                consequence: str) -> Any:
        """`loader(name)` once per modality; on failure None and a note naming the network and the consequence."""
        if modality not in cache:
            try:
                cache[modality] = loader(name, device=self.args.device)
            except (OSError, ValueError, KeyError) as e:
                self.notes.append(f"{modality.upper()} {what} '{name}' could not be loaded "
                                  f"({type(e).__name__}: {e}); {consequence}")
                cache[modality] = None
        return cache[modality]

    def describe(self, kind: str) -> str:
        """E.g. ``MRI `brain-mri-complex` (sha256 b55322ee..., 793 training steps)``, per loaded modality."""
        try:
            from priors.registry import read_registry
            registry = read_registry()
        except ImportError:
            registry = {}
        nets = self.priors if kind == "priors" else self.unets
        parts = []
        for mod, net in nets.items():
            name = getattr(self.args, f"{mod}_{'prior' if kind == 'priors' else 'unet'}")
            if net is None:
                parts.append(f"{mod.upper()} `{name}` (not available)")
                continue
            facts = []
            if name in registry and "sha256" in registry[name]:
                facts.append(f"sha256 {registry[name]['sha256'][:12]}...")
            steps = training_steps(getattr(net, "meta", None) or {})
            if steps:
                total, last = steps
                facts.append(f"{total} training steps" + (f", the last {last} fine-tuning" if last != total else ""))
            parts.append(f"{mod.upper()} `{name}`" + (f" ({', '.join(facts)})" if facts else ""))
        return ", ".join(parts) or "none"


def training_steps(meta: dict) -> tuple[int, int] | None:
    """(all training steps, those of the last run) of a network's metadata: a fine-tuned prior records the run it
    started from under ``init`` (with its own ``steps`` and possibly ``init``); None without a step count."""
    if not meta.get("steps"):
        return None
    last = total = int(meta["steps"])
    earlier = meta.get("init")
    while isinstance(earlier, dict) and earlier.get("steps"):
        total += int(earlier["steps"])
        earlier = earlier.get("init")
    return total, last


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (``recon benchmark ...``), or rebuilt from the parsed options."""
    if "benchmark" in sys.argv[1:]:
        return "recon " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("benchmark"):])
    return f"recon benchmark --preset {args.preset} --out {shlex.quote(str(args.out))}"


def run(args: argparse.Namespace) -> int:
    from recon.benchmark.presets import get_preset
    from recon.benchmark.report import machine_description, write_outputs
    from recon.benchmark.runner import run_benchmark
    from recon.data.brainweb import SHARED_DATA, DataNotFoundError

    modalities = [m.strip() for m in args.modality.split(",") if m.strip()]
    if not modalities or any(m not in ("mri", "ct") for m in modalities):
        print(f"error: --modality must be a comma-separated subset of mri,ct; got '{args.modality}'", file=sys.stderr)
        return 2
    if (problem := device_error(args.device)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    root = args.data or SHARED_DATA
    if not root.exists():
        print(f"error: data folder {root} not found (the benchmark needs the shared test data; pass --data)",
              file=sys.stderr)
        return 2
    if args.threads < 0:
        print(f"error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    notes: list[str] = []
    nets = _Networks(args, notes)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    log(f"benchmark preset '{preset.name}' -> {args.out}")
    try:
        result = run_benchmark(preset, nets.prior, nets.unet, device=args.device, root=root,
                                  modalities=modalities, log=log)
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.device.startswith("cuda"):
        notes.append("run on CPU; the `full` preset is meant for a GPU: "
                     "`recon benchmark --preset full --device cuda --out DIR`")
    result.meta.update({"machine": machine_description(torch.device(args.device)), "device": args.device,
                        "priors": nets.describe("priors"), "unets": nets.describe("unets"), "notes": notes,
                        "modalities": modalities})
    command = _command_line(args)
    targets = write_outputs(result, args.out, command)
    for t in targets:
        print(f"{t.status:<14} {t.name}")
    print(f"report: {args.out / 'REPORT.md'}  ({result.runtime_s / 60:.1f} min)")
    return 0
