"""One trainer per cell: a lock file in the cell's folder, created with O_EXCL.

It names its holder (host, pid) and is renewed (touched) every epoch. A lock is stale, and is
taken over, when its holder is on this host and no longer alive, or when it has not been renewed
for LEASE_S (a holder on another host that died). Two sweeps over the same folder, or several
array tasks running the same plan, thus train every cell once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LEASE_S = 3600.0
NAME = "lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_gone(host: str, pid: int, mtime: float) -> bool:
    """A writer on this host is gone when its pid is; elsewhere, when it has been silent for LEASE_S."""
    if host == socket.gethostname():
        return not _alive(pid)
    return time.time() - mtime > LEASE_S


def _stale(path: Path) -> bool:
    try:
        holder = json.loads(path.read_text())
        mtime = path.stat().st_mtime
    except (OSError, ValueError):
        return True  # unreadable: a holder died while writing it
    return holder_is_gone(str(holder.get("host")), int(holder.get("pid", -1)), mtime)


def acquire(cell_dir: Path) -> bool:
    """True if this process now holds the cell; False if another live process does."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    path = cell_dir / NAME
    for _ in range(2):  # at most one takeover of a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
        return True
    return False


def renew(cell_dir: Path) -> None:
    try:
        os.utime(cell_dir / NAME)
    except OSError:
        pass


def release(cell_dir: Path) -> None:
    (cell_dir / NAME).unlink(missing_ok=True)
