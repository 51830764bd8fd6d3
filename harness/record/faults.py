"""Fault injection for tests: the ONE switch is the environment variable HARNESS_FAULT.

    HARNESS_FAULT="KIND@N[:CELL][,KIND@N[:CELL]...]"   e.g. "oom@3:bs64,nan@2:bs128"

Step faults, at the cell's N-th training step (1-based), in cells whose id starts with CELL
(default: every cell): `error` raises RuntimeError, `oom` raises torch.OutOfMemoryError, `nan`
makes the loss NaN from then on, `usr1` sends this process SIGUSR1 (Slurm's warning signal: a
stop request) after the step. Write fault: `enospc@N` makes the N-th results write of the
process fail with "No space left on device". Unset, nothing is wrapped and nothing costs.
"""

from __future__ import annotations

import errno
import os
import re
import signal

from harness.errors import ConfigError

VARIABLE = "HARNESS_FAULT"
PATTERN = re.compile(r"(error|oom|nan|usr1|enospc)@(\d+)(?::(\S+))?")
_writes = 0


def _specs() -> list[tuple[str, int, str]]:
    spec = os.environ.get(VARIABLE, "")
    parsed = []
    for part in filter(None, spec.split(",")):
        match = PATTERN.fullmatch(part.strip())
        if not match:
            raise ConfigError(f"${VARIABLE}={spec!r}: expected KIND@N[:CELL] with KIND error, oom, nan, usr1 or enospc")
        parsed.append((match.group(1), int(match.group(2)), match.group(3) or ""))
    return parsed


def wrap(step, cell_id: str):
    faults = [(k, n) for k, n, prefix in _specs() if k != "enospc" and cell_id.startswith(prefix)]
    if not faults:
        return step
    import torch  # here, not at the top: results.py imports this module and must not load torch

    count = 0

    def faulty(idx):
        nonlocal count
        count += 1
        for kind, at in faults:
            if count == at and kind == "error":
                raise RuntimeError(f"injected fault ({VARIABLE}) at step {at}")
            if count == at and kind == "oom":
                # torch's own wording, which is how an allocation failure is recognised (training/train.py)
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {VARIABLE} "
                                             f"at step {at})")
        loss = step(idx)
        if any(k == "usr1" and count == at for k, at in faults):
            os.kill(os.getpid(), signal.SIGUSR1)
        return loss * float("nan") if any(k == "nan" and count >= at for k, at in faults) else loss

    return faulty


def before_write(path) -> None:
    """Called by results.write_atomic: fails the N-th write when enospc@N is set."""
    global _writes
    faults = [n for k, n, _ in _specs() if k == "enospc"] if os.environ.get(VARIABLE) else []
    if not faults:
        return
    _writes += 1
    if _writes in faults:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
