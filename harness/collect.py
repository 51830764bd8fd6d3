"""Every result.json under one or more folders -> tidy pandas frames (cells, epochs).

Unreadable or newer-schema files are skipped with a warning, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS
from harness.results import SCHEMA_VERSION

ENV_COLUMNS = ("device_type", "device_name", "num_processes", "distributed_type", "mixed_precision", "torch", "host")


@dataclass
class Collected:
    cells: pd.DataFrame  # one row per cell
    epochs: pd.DataFrame  # one row per (cell, epoch)
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (cell, validation check)
    warnings: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the raw result.json documents
    plans: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, sweep) -> plan.json


def collect(folders: list[Path]) -> Collected:
    rows, epoch_frames, check_frames, warnings, records, plans = [], [], [], [], [], {}
    for folder, label in zip(folders, labels(folders)):
        for path in sorted(folder.rglob("plan.json")):
            try:
                document = json.loads(path.read_text())
                plans[(label, document["sweep"])] = document
            except (OSError, ValueError, KeyError, TypeError) as exc:
                warnings.append(f"skipped {path}: unreadable ({exc})")
        for path in sorted(folder.rglob("result.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or "cell_id" not in record:
                    raise ValueError("not a result document")
            except (OSError, ValueError) as exc:
                warnings.append(f"skipped {path}: unreadable ({exc})")
                continue
            if record.get("schema_version", 0) > SCHEMA_VERSION:
                warnings.append(f"skipped {path}: schema {record['schema_version']} is newer than this harness")
                continue
            record["source"] = label
            records.append(record)
            rows.append(cell_row(record))
            epoch_frames.append(_table(path.parent / "epochs.csv", record))
            check_frames.append(_table(path.parent / "evals.csv", record))
    cells = pd.DataFrame(rows)
    epochs, checks = _frame(epoch_frames, EPOCH_COLUMNS, cells), _frame(check_frames, CHECK_COLUMNS, cells)
    return Collected(cells=cells, epochs=epochs, checks=checks, warnings=warnings, records=records, plans=plans)


def _table(path: Path, record: dict) -> pd.DataFrame | None:
    """A cell's epochs.csv or evals.csv with the cell's keys in front (None when absent or empty)."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if frame.empty:
        return None
    for name in ("cell_id", "sweep", "source"):
        frame.insert(0, name, record[name])
    return frame


def _frame(frames: list[pd.DataFrame | None], columns: tuple[str, ...], cells: pd.DataFrame) -> pd.DataFrame:
    frames = [f for f in frames if f is not None]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for column in columns:  # a column that is empty in every file must still be numeric
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    if not table.empty and not cells.empty:
        table = table.merge(cells[["source", "sweep", "cell_id", "batch_size", "seed", "variant", "learning_rate"]])
    return table


def labels(folders: list[Path]) -> list[str]:
    """Each folder's name, or parent/name where two folders share a name."""
    names = [f.resolve().name or str(f) for f in folders]
    return [f"{f.resolve().parent.name}/{n}" if names.count(n) > 1 else n for f, n in zip(folders, names)]


def cell_row(record: dict) -> dict:
    settings = record.get("settings", {})
    swept = record.get("swept", {})
    env = record.get("environment", {})
    # batch size, seed and learning rate are the axes the analysis compares across; all else is a variant
    other = {k: v for k, v in swept.items() if k not in ("train.batch_size", "train.seed", "optim.lr", "variant")}
    named = [swept["variant"]] if swept.get("variant") else []  # an ablation variant, by its name
    return {
        "source": record["source"],
        "sweep": record.get("sweep"),
        "cell_id": record["cell_id"],
        "status": record.get("status"),
        "error": record.get("error"),
        "batch_size": settings.get("train", {}).get("batch_size"),
        "seed": settings.get("train", {}).get("seed"),
        # what else was swept, so batch sizes are only compared within one variant
        "variant": ", ".join(named + [f"{k}={v}" for k, v in sorted(other.items())]),
        "num_processes": env.get("num_processes"),
        **{f"env.{k}": env.get(k) for k in ENV_COLUMNS},
        # every summary key of harness/metrics.py is a column, None where a record lacks it (a cell
        # that has not finished, an older schema, no GPU), so the analysis never meets a missing column
        **dict.fromkeys(CELL_KEYS),
        **(record.get("summary") or {}),
    }
