"""The results folder contract: results/<sweep>/<cell-id>/{result.json, epochs.csv}.

Every write goes to a temp file in the same folder, then os.replace: a reader sees the old file
or the new one, never half of one. This module has no pandas: the trainer imports it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from harness import faults, locks
from harness.errors import ResultsError

SCHEMA_VERSION = 1
STATUSES = ("done", "oom", "diverged", "failed", "running")

# one row per epoch; add a per-epoch metric here and in train.py's row
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "images_seen",
    "optimizer_steps",
    "timed_steps",
    "train_seconds",
    "time_per_image_s",
    "eval_seconds",
    "energy_j",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_rss_bytes",
    "diagnostics_seconds",
)

# why training went wrong (harness/diagnostics.py): 784-500-500-500-10 has 4 linear layers, 3 hidden
LINEAR_LAYERS, HIDDEN_LAYERS = range(1, 5), range(1, 4)
DIAGNOSTIC_COLUMNS = (
    *(f"{m}_l{i}" for m in ("grad_norm_mean", "grad_norm_max", "update_ratio_max") for i in LINEAR_LAYERS),
    *(f"dead_fraction_l{i}" for i in HIDDEN_LAYERS),
    "max_abs_logit",
    "softmax_saturated_fraction",
    *(f"{m}_l{i}" for m in ("adam_sqrt_v_min", "adam_sqrt_v_median") for i in LINEAR_LAYERS),
    "noise_scale",
)
EPOCH_COLUMNS = EPOCH_COLUMNS + DIAGNOSTIC_COLUMNS


def write_atomic(path: Path, data: str | bytes) -> None:
    """Temp file in the same folder, fsync, os.replace: never a half-written file under `path`.
    A failing disk (full, read-only, gone) becomes a one-line ResultsError."""
    tmp = None
    try:
        faults.before_write(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ResultsError(f"cannot write {path} ({exc.strerror or exc}); free some space or choose "
                               f"another --results-dir, then run again: finished cells are kept") from None
        raise


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back, at import (one thread)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; results are meant to be read by others (a shared cluster folder)
FILE_MODE = 0o666 & ~_current_umask()


def _temp_prefix(path: Path) -> str:
    # the writer's host and pid in the name, so a later run can tell a dead writer's leftover
    return f".{path.name}~{socket.gethostname()}~{os.getpid()}~"


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files whose writer died (SIGKILL, node loss): nothing could clean them up then.
    A live writer's temp is left alone, so concurrent sweeps may call this at any time."""
    for tmp in folder.glob(".*~*~*~*.tmp"):
        try:
            _, host, pid, _ = tmp.name.split("~", 3)
            if locks.holder_is_gone(host, int(pid), tmp.stat().st_mtime):
                tmp.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue


def write_result(cell_dir: Path, result: dict[str, Any]) -> None:
    write_atomic(cell_dir / "result.json", json.dumps(finite_or_null(result), indent=2, allow_nan=False) + "\n")


def finite_or_null(value: Any) -> Any:
    """NaN and infinity become null: strict JSON, and a non-number is not a measurement."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def write_epochs(cell_dir: Path, rows: list[dict[str, Any]]) -> None:
    """The whole table each epoch: cheap at this size, and never a torn last line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EPOCH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    write_atomic(cell_dir / "epochs.csv", out.getvalue())


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cell_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def read_epoch_rows(cell_dir: Path) -> list[dict[str, str]]:
    try:
        with open(cell_dir / "epochs.csv") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def is_done(cell_dir: Path) -> bool:
    result = read_result(cell_dir)
    return bool(result) and result.get("status") == "done"


def check_writable(folder: Path) -> None:
    """Fail before training if results cannot be written; creates nothing that stays."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ResultsError(f"--results-dir: {probe} is a file, not a folder; choose another --results-dir")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ResultsError(f"--results-dir: cannot write in {probe} ({exc.strerror}); choose a writable --results-dir") from None
