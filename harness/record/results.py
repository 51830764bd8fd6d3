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
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.errors import ResultsError
from harness.record import documents, faults, files, locks
from harness.record.metrics import CHECK_COLUMNS, EPOCH_COLUMNS
from harness.record.schema import SCHEMA_VERSION, STATUSES, Invalid, read_record

# schema 2: the report rules left result.json (the report reads them from plan.json's config); a
# version 1 record is read as it is, its "report" section used only where the folder has no plan.json


def write_atomic(path: Path, data: str | bytes, option: str = "--results-dir") -> None:
    """Temp file in the same folder, fsync, os.replace: never a half-written file under `path`.
    A failing disk (full, read-only, gone) becomes a one-line ResultsError naming `option`, the
    command-line option that chose where it goes."""
    tmp = None
    refuse_special(path, option)
    remove_stale_temps(path.parent)  # any writer's temp left by a kill: gone at the folder's next write
    try:
        faults.before_write(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ResultsError(f"cannot write {path} ({exc.strerror or exc}); free some space, fix the permissions or "
                               f"choose another {option}, then run again: what was written before is kept") from None
        raise


def refuse_special(path: Path, option: str) -> None:
    """Only a regular file is ever replaced: os.replace over a device node, a FIFO or a symlink
    would swap the node or the link itself (as root, /dev/null)."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return  # nothing there yet (or a folder that cannot be read: the write says so)
    if not stat.S_ISREG(mode):
        raise ResultsError(f"{path} is {files.kind(mode)}; the harness replaces only regular files (symlinks are not "
                           f"followed): choose another {option}")


def _file_mode() -> int:
    """mkstemp creates files 0600; results are meant to be read by others (a shared cluster
    folder), so they get what open() would give: 0666 less the umask."""
    mask = os.umask(0)  # the only way to read it; set straight back (no other thread creates files)
    os.umask(mask)
    return 0o666 & ~mask


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


STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # the time stamps of records: UTC, to the second


def utc_now() -> str:
    return time.strftime(STAMP_FORMAT, time.gmtime())


def start_record(sweep: str, cell_id: str, cell_index: int, swept: dict[str, Any], settings: dict[str, Any],
                 environment: dict[str, Any], started_utc: str,
                 workload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cell's result.json as it begins: status running, no summary yet. `workload`: its identity
    and where its code was found (harness/workload.py), null for the default MNIST MLP."""
    return {"schema_version": SCHEMA_VERSION, "sweep": sweep, "cell_id": cell_id, "cell_index": cell_index,
            "swept": swept, "settings": settings, "workload": workload, "environment": environment,
            "started_utc": started_utc, "status": "running"}


def finish_record(record: dict[str, Any], status: str, summary: dict[str, Any] | None, finished_utc: str,
                  error: str | None = None) -> dict[str, Any]:
    """The record of a cell that ended: done, oom, diverged or failed, with its summary."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"a cell ends done, oom, diverged or failed, not {status!r}")
    return {**record, "status": status, "summary": summary, "finished_utc": finished_utc, "error": error}


def write_result(cell_dir: Path, result: dict[str, Any]) -> None:
    write_atomic(cell_dir / "result.json", json.dumps(finite_or_null(result), indent=2, allow_nan=False) + "\n")


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """A sweep's JSON document (predict.json, retime.json, branch.json): strict JSON, atomic."""
    write_atomic(path, json.dumps(finite_or_null(doc), indent=2) + "\n")


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
    _write_table(cell_dir / "epochs.csv", EPOCH_COLUMNS, rows)


def write_evals(cell_dir: Path, rows: list[dict[str, Any]]) -> None:
    """evals.csv: one row per validation check within the training (harness/checks.py)."""
    _write_table(cell_dir / "evals.csv", CHECK_COLUMNS, rows)


def _write_table(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """The whole table each time: cheap at this size, and never a torn last line. A key that is not
    a registered column (a misspelling) fails here, loudly, rather than be dropped."""
    for row in rows:
        unknown = sorted(set(row) - set(columns))
        if unknown:
            raise ValueError(f"a row of {path.name} holds keys record/metrics.py does not register: {unknown}")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in finite_or_null(row).items()} for row in rows)
    write_atomic(path, out.getvalue())


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's result.json when it is a valid record of this cell, else None."""
    return record_state(cell_dir)[0]


def record_state(cell_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a valid record, (None, None) when there is none, (None, why) when the
    file is there but cannot be believed: unreadable, another schema, another cell's."""
    path = cell_dir / "result.json"
    if not os.path.lexists(path):  # a dangling symlink is there, and says so below
        return None, None
    try:
        return read_record(path), None
    except Invalid as exc:
        return None, str(exc)


def set_aside(cell_dir: Path, why: str = "unreadable") -> Path:
    """Keep a result.json that cannot be read (or is foreign), or one to train again (`why`
    "retrained", with its epochs.csv and evals.csv), under another name before the cell is
    trained again: nothing is overwritten that has not been kept."""
    suffix = f"{why}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    kept = cell_dir / f"result.json.{suffix}"
    try:
        for name in ("epochs.csv", "evals.csv") if why == "retrained" else ():
            if (cell_dir / name).exists():
                os.replace(cell_dir / name, cell_dir / f"{name}.{suffix}")
        os.replace(cell_dir / "result.json", kept)
    except OSError as exc:
        raise ResultsError(f"cannot keep {cell_dir / 'result.json'} aside ({exc.strerror or exc}); make {cell_dir} "
                           f"writable or choose another --results-dir") from None
    return kept


def check_readable(folder: Path, option: str) -> None:
    """Every folder under `folder` can be listed: os.walk (files.find) skips one it cannot read without a
    word, and a cell there would look absent ("no result yet") when it is only unreadable."""
    def refuse(exc: OSError) -> None:
        raise ResultsError(f"cannot read {exc.filename} ({exc.strerror or exc}); fix its permissions (chmod) or "
                           f"choose another {option}")

    if folder.exists():
        for _ in os.walk(folder, onerror=refuse):
            pass


def read_epoch_rows(cell_dir: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(files.read_text(cell_dir / "epochs.csv"), newline="")))
    except (OSError, ValueError, csv.Error):  # absent, refused, binary bytes: no rows to count
        return []


def write_plan(sweep_dir: Path, document: dict[str, Any]) -> None:
    """plan.json (harness.plan.plan_document); an unchanged plan is left as it is, so the first
    command that planned the sweep stays on record."""
    path = sweep_dir / "plan.json"
    try:
        old = files.load_json(path)
        if (old.get("config"), old.get("cells")) == (document["config"], json.loads(json.dumps(document["cells"]))):
            remove_stale_temps(sweep_dir)  # a plan write cut short by SIGKILL (write_atomic does it otherwise)
            return
    except (OSError, ValueError, AttributeError):
        pass
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(document, indent=2) + "\n")


def planned_ids(sweep_dir: Path) -> list[str] | None:
    """The cell ids of the folder's plan.json in plan order; None where there is none to read."""
    try:
        return [c["id"] for c in documents.read_plan(sweep_dir / "plan.json")["cells"]]
    except Invalid:
        return None


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
        raise ResultsError(f"--results-dir: cannot write in {probe} ({exc.strerror}); choose a writable "
                           f"--results-dir") from None
