"""A cell's checkpoint: everything needed to resume mid-epoch and produce the same numbers.

One file per rank (cell_dir/checkpoint-rank<R>.pt): the weights and optimizer are the same on
every rank, but each rank's running loss and its slice of the order are its own. Written to a
temp file in the same folder, fsynced, then os.replace; torch's zip container checks a CRC-32
per record, so a torn or truncated file fails to load and counts as no checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from harness.record.results import write_atomic
from harness.timing import cpu_share


@dataclass
class Window:
    """The steps since the last check: the timed ones, and the cell's untimed warm-up among them.
    A check (evals.csv) records it and opens the next; a skipped check lets it run on."""

    steps: int = 0
    seconds: float = 0.0
    warmup_steps: int = 0
    warmup_seconds: float = 0.0
    cpu_seconds: float = 0.0  # the process's CPU time in the timed steps (harness/timing.py)
    load_start: float | None = None  # the load average where the timed steps began and ended
    load_end: float | None = None
    gpu_util_seconds: float = 0.0  # NVML utilisation (%) x seconds of the spans that had it
    gpu_util_timed: float = 0.0  # and those spans' seconds

    @property
    def trained_seconds(self) -> float:
        return self.seconds + self.warmup_seconds

    def add(self, span) -> None:
        """A timed span (training/steps.Span) joins the window."""
        self.steps, self.seconds = self.steps + span.steps, self.seconds + span.seconds
        self.cpu_seconds += span.cpu_seconds or 0.0
        self.load_start = self.load_start if self.load_start is not None else span.loads[0]
        self.load_end = span.loads[1] if span.loads[1] is not None else self.load_end
        if span.gpu_util_pct is not None and span.seconds:
            self.gpu_util_seconds += span.gpu_util_pct * span.seconds
            self.gpu_util_timed += span.seconds

    def columns(self, threads: int) -> dict[str, int | float | None]:
        """Its evals.csv columns; `threads` the process's intra-op threads (its CPU share's denominator)."""
        share = cpu_share(self.cpu_seconds, self.seconds, threads)
        return {"window_steps": self.steps, "window_seconds": self.seconds, "window_warmup_steps": self.warmup_steps,
                "window_warmup_seconds": self.warmup_seconds, "window_cpu_share": share,
                "window_load_start": self.load_start, "window_load_end": self.load_end,
                "window_gpu_util_pct": self.gpu_util_seconds / self.gpu_util_timed if self.gpu_util_timed else None}


@dataclass
class LoopState:
    """The step loop's position and what it has accumulated; the sampler state rides along."""

    epoch: int = 1  # the epoch in progress
    step: int = 0  # steps done within it
    steps_done: int = 0  # optimizer steps done in the epochs before it
    warmup_left: int = 0
    warmup_seconds: float = 0.0
    epoch_seconds: float = 0.0  # timed seconds of this epoch so far (all runs of the task added)
    epoch_joules: float | None = None
    epoch_cpu_seconds: float = 0.0  # the process's CPU time in this epoch's timed steps
    epoch_input_wait: float | None = None  # of epoch_seconds, the wait for the loader's batches; None: no loader
    first_losses: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    order: torch.Tensor | None = None  # this epoch's GLOBAL order (steps x batch), CPU
    losses: torch.Tensor | None = None  # this rank's loss of each step of the epoch, CPU
    stream: dict[str, Any] | None = None
    preemptions: int = 0
    diverged_at_step: int | None = None  # the cell's first step whose loss was not finite
    last_finite_loss: float | None = None
    step_norms: dict[str, Any] | None = None  # the epoch's StepNorms so far, when switched on
    evals: list[dict[str, Any]] = field(default_factory=list)  # validation checks within the training
    checks_skipped: int = 0  # scheduled checks skipped to keep checks within their budget
    b_simple_skipped: int = 0  # epochs whose B_simple was skipped to keep it within train.diagnostics_budget
    window: Window = field(default_factory=Window)  # the steps since the last check
    # [seconds, joules, images] of the longest timed window that has an energy reading: a cell's
    # energy per image comes from this one contiguous stretch, never from a sum of short ones
    energy_window: list[float] | None = None

    @property
    def global_step(self) -> int:
        """Optimizer steps done in the cell, this epoch's included."""
        return self.steps_done + self.step

    @property
    def trained_seconds(self) -> float:
        """Every training step's seconds so far, warm-up included: the checks' budget is a share of it."""
        return (self.evals[-1]["train_seconds"] if self.evals else 0.0) + self.window.trained_seconds

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> LoopState:
        """A checkpoint's state (plain data, as `asdict` wrote it); TypeError where it is not ours.
        A state whose window was four flat fields is read as one window."""
        plain = dict(plain)
        flat = {name: plain.pop(f"window_{name}") for name in WINDOW_FIELDS if f"window_{name}" in plain}
        for derived in ("checked_step", "scheduled_step"):  # the next window's end follows from the step
            plain.pop(derived, None)
        window = plain.pop("window", flat)
        if not isinstance(window, dict):
            raise TypeError(f"window is a {type(window).__name__}")
        return cls(**plain, window=Window(**window))

    def counters(self) -> dict[str, Any]:
        """Every field that must be a count, by its dotted name."""
        return {**{name: getattr(self, name) for name in COUNTERS},
                **{f"window.{name}": getattr(self.window, name) for name in WINDOW_COUNTERS}}


WINDOW_FIELDS = tuple(f.name for f in fields(Window))
# annotations are strings here
COUNTERS = tuple(f.name for f in fields(LoopState) if f.type == "int")
WINDOW_COUNTERS = tuple(f.name for f in fields(Window) if f.type == "int")


def path_for(cell_dir: Path, rank: int) -> Path:
    return cell_dir / f"checkpoint-rank{rank}.pt"


def save(cell_dir: Path, rank: int, world: int, state: LoopState, model: torch.nn.Module, optimizer,
         scheduler=None) -> None:
    payload = {"world": world, "state": asdict(state), "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
               "scheduler": scheduler.state_dict() if scheduler is not None else None}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path_for(cell_dir, rank), buffer.getvalue())


def refuse(cell_dir: Path, rank: int, reason: str, warn=print) -> None:
    """Keep a checkpoint that cannot be used as `<name>.refused` (the cell then starts over), with
    one line saying why."""
    target = path_for(cell_dir, rank)
    refused = target.with_name(target.name + ".refused")
    os.replace(target, refused)
    reason = " ".join(reason.split("\n")[0].split())[:200]
    warn(f"refused {target}: {reason}; kept as {refused.name}, the cell starts over")


def load(cell_dir: Path, rank: int, world: int, warn=print) -> dict[str, Any] | None:
    """The checkpoint if it exists, is readable and was written by as many processes.

    Only tensors and plain types are loaded (weights_only=True): a results folder is shared, and a
    planted pickle must not run code here. A file that is not plain data is refused with one line
    and kept aside; a torn one (killed mid-write) counts as no checkpoint."""
    target = path_for(cell_dir, rank)
    if not target.exists():
        return None
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refuse(cell_dir, rank, f"not a plain-data checkpoint ({exc})", warn)
        return None
    except Exception:  # noqa: BLE001 - a torn file (killed mid-write) raises anything torch.load can: no checkpoint
        return None
    if not isinstance(payload, dict) or payload.get("world") != world or not isinstance(payload.get("state"), dict):
        return None  # another process count slices the batch differently, or not ours: start over
    try:
        payload["state"] = LoopState.from_plain(payload["state"])
    except TypeError:
        return None
    wrong = [name for name, value in payload["state"].counters().items() if not _count(value)]
    if wrong:  # plain data in our shape but not our numbers: would fail the loop on every rerun
        refuse(cell_dir, rank, f"its loop state's {wrong[0]} is not a count", warn)
        return None
    return payload


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
