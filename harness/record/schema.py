"""The typed model of a result.json and of a cell's CSV files: what every reader checks before it
believes a file. A results folder is shared (clusters, backups, hand edits), so any file in it may
be empty, truncated, of another schema or of the wrong shape; a reader skips such a file with one
warning that names it and the field, and goes on.

The summary's fields come from harness/record/metrics.py (level `cell`): a count must be an integer, a
measurement a number, text a string; any may be null (unknown). Fields this version does not know
are allowed (a newer minor addition is not a reason to throw a cell away); a newer schema_version is.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationError, create_model

from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS, METRICS

SCHEMA_VERSION = 2
STATUSES = ("done", "oom", "diverged", "failed", "running")


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number (a {type(value).__name__})")
    return value


Number = Annotated[float, BeforeValidator(_number)]


def _summary_field(key: str) -> tuple[Any, Any]:
    metric = next(m for m in METRICS if m.key == key and m.level == "cell")
    kind = {"text": StrictStr, "list": list[Number | None]}.get(metric.unit, StrictInt if metric.integer else Number)
    return (kind | None, None)


Summary = create_model("Summary", __config__=ConfigDict(extra="allow", frozen=True),
                       **{key: _summary_field(key) for key in CELL_KEYS})


class ResultRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: StrictInt = Field(ge=1)
    sweep: StrictStr
    cell_id: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]+$")
    cell_index: StrictInt | None = None
    swept: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]]
    workload: dict[str, Any] | None = None  # the workload's identity; null for the default MNIST MLP
    environment: dict[str, Any] = {}
    status: Literal[STATUSES]
    summary: Summary | None = None
    error: StrictStr | None = None


class Invalid(Exception):
    """A file a reader must not believe; the message names the file and what is wrong."""


def unreadable(path: Path, exc: Exception) -> str:
    """One line for a file that could not be read or parsed at all."""
    return f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def read_record(path: Path) -> dict[str, Any]:
    """The result.json at `path` as a plain dict, checked; Invalid says why it is not one."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Invalid(unreadable(path, exc)) from None
    if not isinstance(document, dict):
        raise Invalid(f"{path}: not a result record (a JSON {type(document).__name__}, not an object)")
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise Invalid(f"{path}: schema_version {version} is newer than this harness ({SCHEMA_VERSION}); upgrade it")
    try:
        ResultRecord.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise Invalid(f"{path}: field {where}: {first['msg'].removeprefix('Value error, ')}") from None
    if document["cell_id"] != path.parent.name:
        raise Invalid(f"{path}: its cell_id {document['cell_id']!r} is not the folder it lies in "
                      f"({path.parent.name!r}): a copy, not this cell's record")
    return document


def settings_digest(record: dict[str, Any]) -> str:
    """What identifies a cell's training beyond its id: a hash of the settings it records."""
    canonical = json.dumps(record.get("settings"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def record_digest(record: dict[str, Any]) -> str:
    """The whole record's hash: two files with equal digests are copies of one measurement."""
    canonical = json.dumps({k: v for k, v in record.items() if k != "source"}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return "record-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


REQUIRED = {"epochs.csv": ("epoch", "val_accuracy", "test_accuracy", "optimizer_steps"),
            "evals.csv": ("step", "val_accuracy", "window_steps", "window_seconds")}
COLUMNS = {"epochs.csv": EPOCH_COLUMNS, "evals.csv": CHECK_COLUMNS}


def read_table(path: Path) -> list[dict[str, float | None]]:
    """A cell's epochs.csv or evals.csv as rows of numbers (None where empty); Invalid when a
    required column is missing, a value is not a number, or there is no row."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Invalid(unreadable(path, exc)) from None
    if not rows:
        raise Invalid(f"{path}: no rows")
    missing = [c for c in REQUIRED[path.name] if c not in rows[0]]
    if missing:
        raise Invalid(f"{path}: column {missing[0]} is missing")
    known = [c for c in COLUMNS[path.name] if c in rows[0]]
    out = []
    for number, row in enumerate(rows, start=2):
        parsed = {}
        for column in known:
            text = row[column]
            try:
                parsed[column] = None if text in ("", None) else float(text)
            except (TypeError, ValueError):
                raise Invalid(f"{path}: line {number}, column {column}: {str(text)[:40]!r} is not a number") from None
        if any(parsed[c] is None for c in REQUIRED[path.name]):
            raise Invalid(f"{path}: line {number}: {', '.join(c for c in REQUIRED[path.name] if parsed[c] is None)} "
                          f"empty")
        out.append(parsed)
    return out
