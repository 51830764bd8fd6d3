"""Stop requests: Slurm's warning signal (USR1) or SIGTERM ask a cell to checkpoint and exit.

The handler only sets a flag; the step loop looks at it between steps, so the current step
finishes. A step that never returns (a hung loss) is ended by a second SIGTERM: the handler then
raises Interrupted inside it, the cell is recorded as failed ("interrupted: ...") and the run
exits 1; from then on SIGTERM has its default action, so a third one ends the process where the
user's code caught even that. A step stuck inside one C call that holds the interpreter runs no
Python handler until it returns: SIGKILL ends it, and the next run takes the cell over (its
holder is dead) from its last checkpoint.

With several processes the ranks must stop at the same step: they agree through one all-reduce
every AGREE_EVERY steps (and nowhere else), which keeps syncs out of the hot loop.
"""

from __future__ import annotations

import signal

import torch
from accelerate import Accelerator

from harness.errors import Interrupted

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
        if self.flag and signum == signal.SIGTERM and self.signal_name == "SIGTERM":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise Interrupted("a second SIGTERM arrived before the step in progress returned (it hung: a loss, "
                              "forward or data call that does not return); the step was abandoned")
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
