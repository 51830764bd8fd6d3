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
import io
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)

from harness.record import files
from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS, METRICS

SCHEMA_VERSION = 2
STATUSES = ("done", "oom", "diverged", "failed", "running")


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number (a {type(value).__name__})")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Finite = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Positive = Annotated[StrictInt, Field(ge=1, le=2**40)]
Count = Annotated[StrictInt, Field(ge=0, le=2**62)]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
Text = StrictStr | None


def _swept(values: Any) -> Any:
    """What a cell's swept settings must be: the batch size and seed the analysis groups by as
    integers, a variant as its name, any other setting a value or a list of values."""
    if not isinstance(values, dict):
        return values  # the dict type says so
    kinds = {"train.batch_size": Positive, "train.seed": Count, "variant": StrictStr}
    for key, value in values.items():
        try:
            TypeAdapter(kinds.get(key, Scalar | list[Scalar])).validate_python(value)
        except ValidationError as exc:
            raise ValueError(f"{key}: {exc.errors()[0]['msg']} (got {str(value)[:40]})") from None
    return values


Swept = Annotated[dict[str, Any], AfterValidator(_swept)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TrainSettings(_Open):
    batch_size: Positive
    seed: Count
    epochs: Positive | None = None
    images_per_epoch: Positive | None = None
    warmup_steps: Count | None = None


class OptimSettings(_Open):
    name: Text = None
    lr: Annotated[Finite, Field(gt=0)] | None = None
    lr_scaling: Text = None
    lr_reference_batch: Positive | None = None


class Settings(_Open):
    train: TrainSettings
    optim: OptimSettings = OptimSettings()
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}


class Environment(_Open):
    """What the report groups and compares by (device, processes, threads, versions): typed; the
    rest is read as recorded."""

    device_type: Text = None
    device_name: Text = None
    num_processes: Positive | None = None
    cpu_threads: Positive | None = None
    distributed_type: Text = None
    mixed_precision: Text = None
    torch: Text = None
    host: Text = None
    command: Text = None
    startup_s: Annotated[Finite, Field(ge=0)] | None = None


def _summary_field(key: str) -> tuple[Any, Any]:
    metric = next(m for m in METRICS if m.key == key and m.level == "cell")
    kind = {"text": StrictStr, "bool": StrictBool, "list": list[Number | None]}.get(
        metric.unit, StrictInt if metric.integer else Number)
    return (kind | None, None)


Summary = create_model("Summary", __config__=ConfigDict(extra="allow", frozen=True),
                       **{key: _summary_field(key) for key in CELL_KEYS})


class ResultRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: StrictInt = Field(ge=1)
    sweep: StrictStr
    cell_id: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]+$")
    cell_index: StrictInt | None = None
    swept: Swept = {}
    settings: Settings
    workload: dict[str, Any] | None = None  # the workload's identity; null for the default MNIST MLP
    environment: Environment = Environment()
    status: Literal[STATUSES]
    summary: Summary | None = None
    error: StrictStr | None = None


class Invalid(Exception):
    """A file a reader must not believe; the message names the file and what is wrong."""


def unreadable(path: Path, exc: Exception) -> str:
    """One line for a file that could not be read or parsed at all."""
    return f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def read_document(path: Path, model: type[BaseModel], newest: int, what: str) -> dict[str, Any]:
    """The JSON file at `path` as a plain dict, read within bounds (record/files.py) and checked
    against `model`; Invalid names the file and the first bad field. `what` names the kind of
    document in the message; a schema_version above `newest` is refused."""
    try:
        document = files.load_json(path)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and files.Refused are ValueErrors
        raise Invalid(unreadable(path, exc)) from None
    if not isinstance(document, dict):
        raise Invalid(f"{path}: not {what} (a JSON {type(document).__name__}, not an object)")
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > newest:
        raise Invalid(f"{path}: schema_version {version} is newer than this harness ({newest}); upgrade it")
    try:
        model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise Invalid(f"{path}: field {where}: {first['msg'].removeprefix('Value error, ')}") from None
    return document


def read_record(path: Path) -> dict[str, Any]:
    """The result.json at `path` as a plain dict, checked; Invalid says why it is not one."""
    document = read_document(path, ResultRecord, SCHEMA_VERSION, "a result record")
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


def read_table(path: Path, bounded: bool = True) -> list[dict[str, float | None]]:
    """A cell's epochs.csv or evals.csv as rows of numbers (None where empty); Invalid when a
    required column is missing, a value is not a number, or there is no row. `bounded`: the
    workload's metric (the *_accuracy columns) is an accuracy in [0, 1] (harness/quality.py);
    otherwise it is any finite number."""
    try:
        rows = list(csv.DictReader(io.StringIO(files.read_text(path), newline="")))
    except (OSError, ValueError, csv.Error) as exc:  # UnicodeDecodeError and files.Refused are ValueErrors
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
        for column, value in parsed.items():
            problem = _out_of_range(column, value, bounded)
            if problem:
                raise Invalid(f"{path}: line {number}, column {column}: {value} {problem}")
        out.append(parsed)
    return out


COUNT_COLUMNS = {"step", "epoch", "optimizer_steps", "images_seen", "window_steps", "window_warmup_steps"}


def _out_of_range(column: str, value: float | None, bounded: bool = True) -> str | None:
    """Why a CSV value cannot be what its column says: an accuracy outside [0, 1] (nan included:
    an evaluation always counts) or another metric's score not finite, a count or a duration that
    is negative or not finite."""
    if value is None:
        return None
    if "accuracy" in column and bounded and not 0 <= value <= 1:
        return "is not an accuracy in [0, 1]"
    if "accuracy" in column and not math.isfinite(value):
        return "is not a finite score"
    if (column in COUNT_COLUMNS or column.endswith("_seconds")) and not (math.isfinite(value) and value >= 0):
        return "is not a finite count or duration >= 0"
    return None
