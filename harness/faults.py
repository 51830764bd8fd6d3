"""Fault injection for tests: the ONE switch is the environment variable HARNESS_FAULT.

    HARNESS_FAULT="KIND@STEP[:CELL]"   e.g. "error@3:bs32-seed0"

KIND: `error` raises RuntimeError, `nan` makes the loss NaN (the cell then diverges); STEP: the
1-based step of the cell at which it happens; CELL: only cells whose id starts with this (default:
every cell). Unset, it costs nothing: the step function is returned untouched.
"""

from __future__ import annotations

import os
import re

import torch

from harness.errors import ConfigError

VARIABLE = "HARNESS_FAULT"


def wrap(step, cell_id: str):
    spec = os.environ.get(VARIABLE)
    if not spec:
        return step
    match = re.fullmatch(r"(error|nan)@(\d+)(?::(\S+))?", spec)
    if not match:
        raise ConfigError(f"${VARIABLE}={spec!r}: expected KIND@STEP[:CELL] with KIND error or nan")
    kind, at, prefix = match.group(1), int(match.group(2)), match.group(3) or ""
    if not cell_id.startswith(prefix):
        return step
    count = 0

    def faulty(idx: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        if count == at and kind == "error":
            raise RuntimeError(f"injected fault ({VARIABLE}={spec}) at step {at}")
        loss = step(idx)
        return loss * float("nan") if count >= at and kind == "nan" else loss

    return faulty
