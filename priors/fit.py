"""One training loop for every network trained in this toolkit (after NVlabs/edm ``training_loop``).

`fit` repeats a caller's optimisation ``step`` and owns everything around it:

* resume from ``OUT/checkpoint.pt``: model, optimiser, step count, wall time, last logged loss,
  last validation and the states of the caller's random generators (numpy ``Generator`` and
  ``torch.Generator``), so a resumed run continues the very same sequence;
* atomic checkpoints (write to a temporary file, then rename) every ``ckpt_minutes`` of wall
  clock and every ``ckpt_every`` steps, and a final one however the loop ends;
* ``loss.csv``: ``step, wall_s, loss, lr`` (+ validation columns); ``loss`` is the mean over the
  steps since the previous row;
* a step limit and a wall-clock budget (``max_minutes``), and an optional progress bar.

What is specific to one trainer stays with it: the ``step`` callable (data, loss, backward,
optimiser step, EMA), ``extra_state`` (more checkpoint entries), ``on_resume`` (check a checkpoint
fits the request, load more state) and ``validate`` (numbers logged at each checkpoint and at the end).
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "loss.csv"
LOG_COLUMNS = ("step", "wall_s", "loss", "lr")

Rng = np.random.Generator | torch.Generator


@dataclass(frozen=True)
class FitConfig:
    """When to stop, checkpoint and log.

    Attributes:
        steps: stop after this many optimiser steps (counted over resumed sessions).
        max_minutes: wall-clock budget of this session (``None``: none).
        ckpt_minutes: checkpoint (and validate) when this much wall time passed since the last one.
        ckpt_every: also checkpoint every N steps (0: off).
        log_every: a CSV row every N steps.
        resume: continue from ``OUT/checkpoint.pt`` (appending to ``loss.csv``).
        progress: show a progress bar.
        desc: the progress bar's label.
    """

    steps: int
    max_minutes: float | None = None
    ckpt_minutes: float = 5.0
    ckpt_every: int = 0
    log_every: int = 50
    resume: bool = False
    progress: bool = False
    desc: str = ""

    @property
    def budget_s(self) -> float:
        """The wall-clock budget in seconds (``inf`` without ``max_minutes``)."""
        return math.inf if self.max_minutes is None else 60.0 * self.max_minutes


@dataclass(frozen=True)
class StepInfo:
    """What a step may need to know about the run (e.g. for a learning-rate schedule).

    Attributes:
        step: optimiser steps completed before this one.
        total_steps: `FitConfig.steps`.
        elapsed_s: wall time of this session so far.
        budget_s: `FitConfig.budget_s`.
    """

    step: int
    total_steps: int
    elapsed_s: float
    budget_s: float

    @property
    def fraction_done(self) -> float:
        """Progress in [0, 1]: by steps or by this session's wall-clock budget, whichever is further."""
        return max(self.step / self.total_steps, self.elapsed_s / self.budget_s)


@dataclass(frozen=True)
class StepLog:
    """The numbers one step reports: its loss (averaged over a log interval) and learning rate."""

    loss: float
    lr: float


@dataclass
class FitState:
    """The loop's counters, saved in and restored from the checkpoint."""

    step: int = 0
    wall_prev_s: float = 0.0
    final_loss: float = float("nan")
    validation: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """Summary of a `fit` call."""

    steps: int
    wall_time_s: float
    final_loss: float
    validation: dict[str, float]
    checkpoint: Path
    log: Path


# ---------------------------------------------------------------------------
# checkpoint helpers
# ---------------------------------------------------------------------------
def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file, so a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state(rng: Rng) -> Any:
    """The state of a numpy ``Generator`` (a dict) or a ``torch.Generator`` (a CPU byte tensor)."""
    return rng.get_state() if isinstance(rng, torch.Generator) else rng.bit_generator.state


def set_rng_state(rng: Rng, state: Any) -> None:
    """Restore a state returned by `rng_state` (torch states are moved to the CPU first)."""
    if isinstance(rng, torch.Generator):
        rng.set_state(state.cpu())
    else:
        rng.bit_generator.state = state


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def load_for_resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rngs: Mapping[str, Rng],
                    on_resume: Callable[[dict[str, Any]], None] | None = None) -> FitState:
    """Restore model, optimiser and generators from a `fit` checkpoint; returns the loop's counters.

    ``on_resume(checkpoint)`` runs first: it may refuse the checkpoint (raise) or load more state.
    """
    if not path.exists():
        raise FileNotFoundError(f"resume requested but {path} does not exist")
    ck = torch.load(path, map_location=_model_device(model), weights_only=False)
    if on_resume is not None:
        on_resume(ck)
    model.load_state_dict(ck["net"])
    optimizer.load_state_dict(ck["opt"])
    for key, rng in rngs.items():
        set_rng_state(rng, ck[key])
    return FitState(step=ck["step"], wall_prev_s=ck["wall_time_s"], final_loss=ck["final_loss"],
                    validation=dict(ck.get("validation", {})))


class _CsvLog:
    """``loss.csv``: a header on a fresh file, then one flushed row at a time."""

    def __init__(self, path: Path, columns: Sequence[str], append: bool):
        fresh = not append or not path.exists()
        self._file = open(path, "w" if fresh else "a", newline="")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(list(columns))

    def row(self, values: Sequence[Any]) -> None:
        self._writer.writerow(list(values))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _validation_cells(validation: Mapping[str, float] | None, columns: Sequence[str]) -> list[str]:
    return [f"{validation[c]:.3f}" if validation is not None else "" for c in columns]


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------
def fit(step: Callable[[StepInfo], StepLog], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
        out: Path | str, config: FitConfig, *, rngs: Mapping[str, Rng] | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        on_resume: Callable[[dict[str, Any]], None] | None = None,
        validate: Callable[[], dict[str, float]] | None = None,
        validation_columns: Sequence[str] = ()) -> FitResult:
    """Train ``model`` with ``step`` until ``config.steps`` or the time budget; checkpoint to ``out``.

    Args:
        step: one optimisation step (sample data, loss, backward, ``optimizer.step()``, ...);
            gets a `StepInfo` and returns a `StepLog`.
        model: the trained network, saved as ``"net"``.
        optimizer: saved as ``"opt"``.
        out: run folder (created); holds ``checkpoint.pt`` and ``loss.csv``.
        config: limits and intervals.
        rngs: the generators ``step`` draws from, by checkpoint key (e.g. ``{"data_rng": ...,
            "torch_rng": ...}``); their states are saved and restored.
        extra_state: more checkpoint entries (configuration, EMA weights, provenance).
        on_resume: called with the loaded checkpoint before anything is restored.
        validate: numbers logged in ``validation_columns`` at each checkpoint and once at the end
            (then in a last CSV row with an empty ``lr``); kept in the checkpoint as ``"validation"``.
        validation_columns: CSV columns after ``step, wall_s, loss, lr``; keys of ``validate()``.

    Checkpoint: ``{**extra_state(), "net", "opt", <rngs>, "step", "wall_time_s", "final_loss"}``
    (+ ``"validation"`` with ``validate``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ck_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME
    rngs = dict(rngs or {})
    state = load_for_resume(ck_path, model, optimizer, rngs, on_resume) if config.resume else FitState()
    t0 = time.monotonic()

    def wall() -> float:
        return state.wall_prev_s + time.monotonic() - t0

    def save() -> None:
        ck = {**(extra_state() if extra_state else {}), "net": model.state_dict(), "opt": optimizer.state_dict(),
              **{key: rng_state(rng) for key, rng in rngs.items()},
              "step": state.step, "wall_time_s": wall(), "final_loss": state.final_loss}
        if validate is not None:
            ck["validation"] = state.validation
        atomic_save(ck, ck_path)

    from tqdm import tqdm

    log = _CsvLog(log_path, (*LOG_COLUMNS, *validation_columns), append=config.resume)
    bar = tqdm(total=config.steps, initial=state.step, disable=not config.progress, mininterval=30.0, desc=config.desc)
    last_ck, losses = t0, []
    model.train()
    try:
        while state.step < config.steps:
            elapsed = time.monotonic() - t0
            if elapsed >= config.budget_s:
                break
            logged = step(StepInfo(state.step, config.steps, elapsed, config.budget_s))
            state.step += 1
            losses.append(logged.loss)
            ck_due = (time.monotonic() - last_ck > 60 * config.ckpt_minutes
                      or bool(config.ckpt_every and state.step % config.ckpt_every == 0))
            validated = ck_due and validate is not None
            if validated:
                state.validation = validate()
            if state.step % config.log_every == 0 or validated:
                state.final_loss = float(np.mean(losses))
                losses = []
                log.row([state.step, f"{wall():.1f}", f"{state.final_loss:.6f}", f"{logged.lr:.3g}",
                         *_validation_cells(state.validation if validated else None, validation_columns)])
                bar.set_postfix(loss=f"{state.final_loss:.4f}")
            bar.update(1)
            if ck_due:
                save()
                last_ck = time.monotonic()
    finally:
        if losses:
            state.final_loss = float(np.mean(losses))
        if validate is not None:
            state.validation = validate()
            log.row([state.step, f"{wall():.1f}", f"{state.final_loss:.6f}", "",
                     *_validation_cells(state.validation, validation_columns)])
        save()
        bar.close()
        log.close()
    return FitResult(steps=state.step, wall_time_s=wall(), final_loss=state.final_loss,
                     validation=dict(state.validation), checkpoint=ck_path, log=log_path)
