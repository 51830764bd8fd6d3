"""One trainer per cell: a lock file in the cell's folder, taken atomically.

Taking: the holder's record (host, pid, the process's start time, boot id, Slurm job, a random
token) is written to a temp file first and then hard-linked to `lock`: link() creates the name only
if it does not exist, so no one ever sees a half-written lock and two processes never both succeed.

Stale: a lock is taken over when its holder is gone: on this host, its pid is dead or belongs to a
newer process (the start time differs: a reused pid) or the machine rebooted; from the same Slurm
job (a requeued task is a new incarnation of it), at once; on any host, when it has not been
renewed for LEASE_S (the holder renews it every RENEW_S from a background thread while it trains,
so a live pid that does not renew is not a trainer: a pid reused by another program, a lock
copied from elsewhere, a holder hung for minutes).

Takeover is atomic too: to replace a stale lock, a process must first create
`lock.takeover-<token of that lock>` (link again: one winner per stale lock), then re-read `lock`
and replace it only if it still carries that token. A slower process that judged the same lock
stale finds the token changed and backs off. Residual risk: a process that dies between creating
its takeover file and replacing the lock leaves that lock stuck until LEASE_S passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from harness.errors import ResultsError
from harness.record import files

LEASE_S = 300.0
RENEW_S = 30.0
NAME = "lock"
_held: dict[Path, str] = {}  # cell folder -> the token of the lock this process holds there


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError, OverflowError):  # gone, or not a pid
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _slurm_job() -> str | None:
    """The Slurm job (array task) and task rank this process runs as: it runs once at a time, so a
    lock it finds under the same name is an earlier incarnation's (a requeue)."""
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    name = f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")
    return f"{name}/{os.environ.get('SLURM_PROCID', '0')}" if name else None


def holder_record() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid), "boot": _boot_id(),
            "slurm_job": _slurm_job(), "token": secrets.token_hex(8), "since": time.time()}


def holder_is_gone(host: str, pid: int, mtime: float, start: float | None = None, boot: str | None = None,
                   slurm_job: str | None = None) -> bool:
    """Whether the process that wrote a lock (or a temp file) can no longer be running."""
    if slurm_job and slurm_job == _slurm_job() and pid != os.getpid():
        return True  # this Slurm job (array task) runs once at a time: that was an earlier incarnation
    if time.time() - mtime > LEASE_S:
        return True  # not renewed: whatever holds that pid is not training this cell
    if host == socket.gethostname():
        if boot and boot != _boot_id():
            return True
        now = _process_start(pid)
        return now is None or (start is not None and abs(now - start) > 1.0)
    return False


def describe(cell_dir: Path) -> str:
    """The lock's holder and how long since it renewed, for `harness status`: "-" without a lock."""
    try:
        record, mtime = _read(cell_dir / NAME)
    except ResultsError:
        return "lock unreadable"
    if record is None:
        return "-"
    age = time.time() - mtime
    who = f"{record.get('host', '?')} pid {record.get('pid', '?')}"
    return f"{who}, renewed {_age(age)} ago" + (" (stale: the next run takes it over)" if _stale(record, mtime) else "")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _read(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """(holder record, mtime), or (None, None) when the file is gone; an unreadable one counts as
    a record of no one (stale)."""
    try:
        text, mtime = files.read_text(path), path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    except (ValueError, IsADirectoryError):  # refused (a FIFO, too big) or not text: a record of no one
        return {}, path.lstat().st_mtime
    except PermissionError:
        raise ResultsError(f"cannot read {path} (permission denied); fix the folder's permissions or choose "
                           f"another --results-dir") from None
    try:
        record = json.loads(text)
        return (record if isinstance(record, dict) else {}), mtime
    except ValueError:
        return {}, mtime


def _stale(record: dict[str, Any], mtime: float) -> bool:
    if not isinstance(record.get("host"), str) or "pid" not in record:
        return True  # not a lock anyone could hold: planted, or garbage
    try:
        return holder_is_gone(str(record.get("host")), int(record.get("pid", -1)), mtime, record.get("start"),
                              record.get("boot"), record.get("slurm_job"))
    except (TypeError, ValueError):
        return True  # not a lock anyone could hold


def acquire(cell_dir: Path) -> bool:
    """True if this process now holds the cell; False if another live process does."""
    mine = holder_record()
    try:
        cell_dir.mkdir(parents=True, exist_ok=True)
        path = cell_dir / NAME
        temp = cell_dir / f".{NAME}~{mine['host']}~{mine['pid']}~{mine['token']}.tmp"
        temp.write_text(json.dumps(mine))
    except OSError as exc:
        raise ResultsError(f"cannot write a lock in {cell_dir} ({exc.strerror or exc}); make the folder writable or "
                           f"choose another --results-dir") from None
    try:
        for _ in range(5):  # a lock that vanished between two looks: try again
            try:
                os.link(temp, path)
                _held[cell_dir] = mine["token"]
                return True
            except FileExistsError:
                pass
            record, mtime = _read(path)
            if record is None:
                continue
            if not _stale(record, mtime):
                return False
            if _take_over(path, record, temp):
                _held[cell_dir] = mine["token"]
                return True
            return False
        return False
    except OSError as exc:
        raise ResultsError(f"cannot lock {cell_dir} ({exc.strerror or exc}); make the folder writable or choose "
                           f"another --results-dir") from None
    finally:
        temp.unlink(missing_ok=True)


def _take_over(path: Path, stale: dict[str, Any], temp: Path) -> bool:
    """Replace the stale lock by ours, if we are the one process allowed to for this lock."""
    token = str(stale.get("token") or "untokened-" + hashlib.sha1(json.dumps(stale, sort_keys=True, default=str)
                                                                   .encode()).hexdigest()[:12])
    claim = path.with_name(f"{NAME}.takeover-{token}")
    try:
        os.link(temp, claim)
    except FileExistsError:
        claimed, mtime = _read(claim)
        if claimed is not None and time.time() - (mtime or 0) > LEASE_S:  # a taker died mid-takeover long ago
            claim.unlink(missing_ok=True)
        return False
    try:
        current, _ = _read(path)
        if current != stale:  # someone replaced or released it since we looked
            return False
        os.replace(temp, path)
        return True
    finally:
        claim.unlink(missing_ok=True)


def renew(cell_dir: Path) -> None:
    """Touch the lock, if it is still ours (a takeover after a wrong lease judgement makes it not)."""
    record, _ = _read(cell_dir / NAME)
    if record and record.get("token") == _held.get(cell_dir):
        try:
            os.utime(cell_dir / NAME)
        except OSError:
            pass


class LockLost(Exception):
    """This process no longer holds the cell it trains: another took the lock over (this one was
    paused or stalled past LEASE_S without renewing). It must stop without writing there."""


def lost(cell_dir: Path) -> bool:
    """Whether this process took the cell's lock and the lock there is no longer its own (False
    where it never took one: nothing to lose)."""
    if cell_dir not in _held:
        return False
    try:
        record, _ = _read(cell_dir / NAME)
    except ResultsError:
        return True
    return not record or record.get("token") != _held[cell_dir]


def release(cell_dir: Path) -> None:
    record, _ = _read(cell_dir / NAME)
    if record is not None and record.get("token") == _held.pop(cell_dir, None):
        (cell_dir / NAME).unlink(missing_ok=True)


class Renewer:
    """Renews a held lock every RENEW_S while a cell trains, so a holder on another host is never
    judged gone (LEASE_S) while it works, however long its epochs."""

    def __init__(self, cell_dir: Path):
        self.cell_dir, self._stop = cell_dir, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-renewer", daemon=True)

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(RENEW_S):
            renew(self.cell_dir)
