"""The one step loop. A cell's training, predict's short runs and timing pass, and bench's engine
all run their steps through `run_steps`; only bench's tutorial reference loop is written apart,
on purpose (it is the loop users write, the thing measured against).

A span is synced with the device at its two edges and nowhere inside: a step is queued, never
waited for, unless the caller asks (`on_loss` may read a loss, `stop` may all-reduce a flag). Its
seconds are the slowest rank's: in data-parallel training every rank waits for the slowest one at
the next collective, so that is the span's wall time. Its energy is summed over the ranks' GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.timing import cpu_share
from harness.training.engine import Engine
from harness.training.measure import SyncedTimer, over_ranks
from harness.training.telemetry import NvmlMonitor


@dataclass(frozen=True)
class Span:
    steps: int  # steps run: fewer than asked when `stop` said so
    seconds: float | None  # wall time between the two synced edges, the slowest rank's; None untimed
    joules: float | None  # GPU energy over the span, all ranks; None where unknown or untimed
    cpu_seconds: float | None = None  # CPU time over the span: the least-served rank's share x seconds x threads
    loads: tuple[float | None, float | None] = (None, None)  # the load average at its two edges
    gpu_util_pct: float | None = None  # NVML's mean GPU utilisation over the span, the busiest rank's
    input_wait_seconds: float | None = None  # of `seconds`, the time spent waiting for the loader; None: no loader


def run_steps(engine: Engine, batch_at: Callable[[int], Any], start: int, end: int, *, timed: bool = True,
              monitor: NvmlMonitor | None = None, stop: Callable[[int], bool] | None = None,
              on_loss: Callable[[int, torch.Tensor], None] | None = None) -> Span:
    """Steps `start`..`end - 1`: step i trains on `batch_at(i)`, this rank's batch (its sample
    indices on the device, or a loader's pair). Before step i, `stop(i)` may end the span early
    (every rank must agree). `on_loss(i, loss)` gets each step's loss as a device tensor. Untimed
    (`timed=False`), the span has no clock and no sync at all. An empty span costs nothing, not even its syncs."""
    if start >= end:
        return Span(0, 0.0 if timed else None, None)
    accelerator = engine.accelerator
    clock = SyncedTimer(accelerator.device, monitor) if timed else contextlib.nullcontext()
    step = start
    waited = getattr(batch_at, "wait_seconds", None)  # a loader's feed (training/streamed.py) counts its waits
    with clock:
        while step < end and not (stop is not None and stop(step)):
            loss = engine.step(batch_at(step))
            if on_loss is not None:
                on_loss(step, loss)
            step += 1
    if not timed:
        return Span(step - start, None, None)
    threads = torch.get_num_threads()
    share = cpu_share(clock.cpu_seconds, clock.seconds, threads)
    across = over_ranks(accelerator, {"window_seconds": clock.seconds, "energy_j": clock.joules,
                                      "window_cpu_share": share, "window_load_start": clock.load_start,
                                      "window_load_end": clock.load_end, "window_gpu_util_pct": clock.gpu_util_pct,
                                      "input_wait_seconds": None if waited is None else batch_at.wait_seconds - waited})
    share, seconds = across["window_cpu_share"], across["window_seconds"]
    return Span(step - start, seconds, across["energy_j"],
                cpu_seconds=share * seconds * threads if share is not None else None,
                loads=(across["window_load_start"], across["window_load_end"]),
                gpu_util_pct=across["window_gpu_util_pct"], input_wait_seconds=across["input_wait_seconds"])
