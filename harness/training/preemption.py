"""Stop requests: Slurm's warning signal (USR1) or SIGTERM ask a cell to checkpoint and exit.

The handler only sets a flag; the step loop looks at it between steps, so the current step always
finishes. With several processes the ranks must stop at the same step: they agree through one
all-reduce every AGREE_EVERY steps (and nowhere else), which keeps syncs out of the hot loop.
"""

from __future__ import annotations

import signal

import torch
from accelerate import Accelerator

AGREE_EVERY = 100


class StopRequest:
    def __init__(self) -> None:
        self.flag = False
        self.signal_name: str | None = None

    def install(self) -> StopRequest:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.flag = True
        self.signal_name = signal.Signals(signum).name

    def should_stop(self, accelerator: Accelerator, step: int) -> bool:
        """Whether every rank stops after `step` (a count of steps done, the same on every rank)."""
        if accelerator.num_processes == 1:
            return self.flag
        if step % AGREE_EVERY:
            return False
        flag = torch.tensor(float(self.flag), device=accelerator.device)
        return bool(accelerator.reduce(flag, "sum").item() > 0)
