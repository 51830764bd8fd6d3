"""Reading a file from a results folder without trusting it: a regular file only, within a size cap
for its kind, and JSON no deeper than MAX_DEPTH, all checked before parsing.

A results folder is shared, so any name in it may be a FIFO (a read blocks forever), a symlink to
/dev/zero (a read never ends), a link out of the folder, a file of gigabytes, or JSON nested
100,000 deep (a RecursionError in the parser, or later in any code that walks it). Each is
refused with Refused, a ValueError, so every reader's existing "unreadable" path names the file
and the reason in one line. A symlink is followed only to a regular file inside the folder above
the file's own (a cell's files: the sweep folder), so a results folder can be moved or linked
into another, but never points a reader at /dev or /etc.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

MiB = 2**20
LIMITS = {"result.json": 8 * MiB, "plan.json": 256 * MiB, "predict.json": 8 * MiB, "epochs.csv": 32 * MiB,
          "evals.csv": 64 * MiB, "lock": 64 * 1024}
DEFAULT_LIMIT = 16 * MiB
MAX_DEPTH = 64  # the deepest our own files go is 6
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


class Refused(ValueError):
    """A file no reader should parse: what it is and why, in words."""


def limit_for(path: Path) -> int:
    return LIMITS.get(path.name, DEFAULT_LIMIT)


def read_text(path: Path, limit: int | None = None) -> str:
    """The file's text, if it is a regular file (or a symlink to one within the folder above it)
    of at most `limit` bytes (its kind's cap). OSError where it cannot be read; Refused otherwise."""
    limit = limit_for(path) if limit is None else limit
    if path.is_symlink():
        target, within = path.resolve(), path.parent.parent.resolve()
        if not target.is_relative_to(within):
            raise Refused(f"a symlink to {target}, outside {within}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer and is refused below
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"not a regular file ({kind(info.st_mode)})")
        if info.st_size > limit:
            raise Refused(f"{info.st_size:,} bytes, more than the {limit:,} a {path.name} may have")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since fstat
        raise Refused(f"more than the {limit:,} bytes a {path.name} may have")
    return data.decode("utf-8")


def load_json(path: Path, limit: int | None = None) -> Any:
    """read_text, then JSON nested at most MAX_DEPTH deep."""
    text = read_text(path, limit)
    check_depth(text, str(path))
    return json.loads(text)


def check_depth(text: str, name: str) -> None:
    """Refused where brackets outside strings nest deeper than MAX_DEPTH (checked before parsing:
    the parser itself recurses)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            raise Refused(f"nested more than {MAX_DEPTH} deep")


def kind(mode: int) -> str:
    """What a non-regular file is, in words, from its st_mode."""
    return ("a symlink" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "not a file")


def find(folder: Path, name: str) -> list[Path]:
    """Every entry called `name` under `folder`, sorted, symlinks included whether or not they
    resolve (Path.rglob drops a dangling one without a word; a reader then says why it cannot be
    read). Folders are not followed through symlinks."""
    return sorted(Path(root) / name for root, dirs, names in os.walk(folder) if name in names or name in dirs)
