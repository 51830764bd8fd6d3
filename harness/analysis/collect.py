"""Every result.json under one or more folders -> tidy pandas frames (cells, epochs).

Unreadable or newer-schema files are skipped with a warning, never a crash.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.schedules import schedule_of, switches_of
from harness.config import flatten
from harness.quality import Quality, unit_of
from harness.record import documents, files
from harness.record.metrics import CELL_KEYS, CHECK_COLUMNS, EPOCH_COLUMNS, energy_resolved
from harness.record.schema import Invalid, read_record, read_table, record_digest, settings_digest

ENV_COLUMNS = ("device_type", "device_name", "num_processes", "distributed_type", "mixed_precision", "torch", "host")


@dataclass
class Collected:
    cells: pd.DataFrame  # one row per cell
    epochs: pd.DataFrame  # one row per (cell, epoch)
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (cell, validation check)
    warnings: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the raw result.json documents
    plans: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, sweep) -> plan.json
    predictions: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, sweep) -> predict.json
    retimes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, sweep) -> retime.json
    capacities: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, sweep) -> capacity.json
    unregistered: list[str] = field(default_factory=list)  # summary keys record/metrics.py does not know


def collect(folders: list[Path]) -> Collected:
    """Every valid record under the folders, each cell once. What cannot be believed (harness/
    schema.py) is skipped with one warning naming the file and the field; a cell found twice (the
    same folder given twice, a backup copy inside it) is counted once, with a warning."""
    found = Collected(cells=pd.DataFrame(), epochs=pd.DataFrame())
    rows, epoch_frames, check_frames, seen, given = [], [], [], {}, {}
    for folder, label in zip(folders, labels(folders)):
        if folder.resolve() in given:
            found.warnings.append(f"skipped {folder}: the same folder as {given[folder.resolve()]}, given twice")
            continue
        given[folder.resolve()] = folder
        _documents(folder, label, found)
        for path, record in _own_copies_first(folder, found.warnings):
            if _seen_before(record, label, path, seen, found.warnings):
                continue
            record["source"] = label
            found.records.append(record)
            rows.append(cell_row(record))
            epoch_frames.append(_table(path.parent / "epochs.csv", record, found.warnings))
            check_frames.append(_table(path.parent / "evals.csv", record, found.warnings))
    found.cells = pd.DataFrame(rows)
    _unmeasured_quality(found)
    _apart_by_settings(found)
    _note_unregistered(found)
    found.epochs = _frame(epoch_frames, EPOCH_COLUMNS, found.cells)
    found.checks = _frame(check_frames, CHECK_COLUMNS, found.cells)
    return found


def _own_copies_first(folder: Path, warnings: list[str]) -> list[tuple[Path, dict]]:
    """Every readable record under the folder, the copy in the cell's own folder (the one its id
    names, the shallowest: not a backup folder's copy of it) before any other copy (a backup in a
    folder that sorts first), then by path."""
    readable = []
    for path in files.find(folder, "result.json"):
        try:
            readable.append((path, read_record(path)))
        except Invalid as exc:
            warnings.append(f"skipped {exc}")
    return sorted(readable, key=lambda found: (found[0].parent.name != found[1]["cell_id"], len(found[0].parts),
                                               str(found[0])))


QUALITY = ("best_val_accuracy", "test_accuracy_at_best_val")  # what every comparison of done cells reads


def _unmeasured_quality(found: Collected) -> None:
    """A done cell whose validation or test metric is unknown (null: not finite when it was
    written, or planted) cannot be compared: it counts as failed, with one warning naming it."""
    if found.cells.empty:
        return
    values = found.cells[list(QUALITY)].apply(pd.to_numeric, errors="coerce")
    bad = (found.cells["status"] == "done") & ~values.apply(lambda c: c.map(math.isfinite)).all(axis=1)
    for index in found.cells.index[bad]:
        cell = found.cells.loc[index, "cell_id"]
        found.warnings.append(f"{cell}: done, but its summary.best_val_accuracy or test_accuracy_at_best_val is "
                              "null or not finite (a metric that was NaN); left out as failed")
    found.cells.loc[bad, "status"] = "failed"
    found.cells.loc[bad, "error"] = "its validation or test metric is not finite"


# set per launch or derived, not what a cell trains: never a reason to keep cells apart
# (a batch schedule is compared whole, beside the fixed batch sizes: analysis/schedules.py)
UNCOMPARED = {"train.batch_size", "train.seed", "optim.lr", "train.threads", "train.batch_schedule",
              "train.batch_schedule_unit"}


def _apart_by_settings(found: Collected) -> None:
    """Cells the analysis would average as seeds (one sweep, variant, batch size and rate) whose
    settings differ beyond what was swept (two configs run into one folder: MNIST and
    Fashion-MNIST at the same batch size and seed) are kept apart: the differing settings join
    the variant of every cell of that sweep, and one warning names them."""
    if found.cells.empty:
        return
    flat = [flatten(r.get("settings") or {}) for r in found.records]
    keyed = found.cells.assign(rate=[json.dumps(f.get("optim.lr")) for f in flat])
    for (source, sweep), sweep_rows in keyed.groupby(["source", "sweep"]).groups.items():
        differing: set[str] = set()
        for _, index in keyed.loc[sweep_rows].groupby(["variant", "batch_size", "rate"]).groups.items():
            rows = list(index)  # an ablation variant's overrides are what it varies: compared within it
            keys = set().union(*(flat[i] for i in rows)) - UNCOMPARED
            keys -= {k for i in rows for k in found.records[i].get("swept") or {}}
            differing |= {k for k in keys if len({json.dumps(flat[i].get(k), sort_keys=True) for i in rows}) > 1}
        if not differing:
            continue
        differing, rows = sorted(differing), list(sweep_rows)
        for i in rows:
            extra = ", ".join(f"{k}={flat[i].get(k)}" for k in differing)
            found.cells.at[i, "variant"] = ", ".join(v for v in (found.cells.at[i, "variant"], extra) if v)
        found.warnings.append(f"{source}/{sweep}: its cells differ in {', '.join(differing[:5])} beyond what the "
                              f"sweep varies (two configs in one folder?): shown apart, never averaged as seeds")


def _note_unregistered(found: Collected) -> None:
    """Summary keys the registry does not know (a misspelled key where a summary is computed, or a
    newer harness) would otherwise sit in no table of the report: one warning for all of them; the
    report lists them as they are."""
    counts: dict[str, int] = {}
    for record in found.records:
        for key in record.get("summary") or {}:
            if key not in CELL_KEYS:
                counts[key] = counts.get(key, 0) + 1
    if counts:
        found.unregistered = sorted(counts)
        named = ", ".join(f"{key} ({n} cell{'s' * (n > 1)})" for key, n in sorted(counts.items()))
        found.warnings.append(f"result.json summaries hold keys the metrics registry does not know: {named}; a "
                              f"misspelled key where the summary is computed, or a newer harness: the report lists "
                              f"them as recorded, after the registered columns of the cells table")


def _seen_before(record: dict, label: str, path: Path, seen: dict, warnings: list[str]) -> bool:
    """A cell counts once per folder (a backup copy inside it is not a second seed), and an
    identical record in another folder is a copy, not a second measurement (the same sweep run
    on two machines gives two records that differ, and both count)."""
    keys = ((label, record["sweep"], record["cell_id"], settings_digest(record)), record_digest(record))
    earlier = next((seen[key] for key in keys if key in seen), None)
    if earlier is not None:
        warnings.append(f"skipped {path}: the same cell (id and settings) as {earlier}; counted once")
        return True
    seen.update(dict.fromkeys(keys, path))
    return False


def _documents(folder: Path, label: str, found: Collected) -> None:
    """plan.json, predict.json, retime.json and capacity.json of each sweep under the folder, checked
    (record/documents.py); one that fails is a warning naming the file and the field, and is left out."""
    for name, held, read, sweep_of in (("plan.json", found.plans, documents.read_plan, lambda d: d["sweep"]),
                                       ("predict.json", found.predictions, documents.read_prediction,
                                        lambda d: d["config"]["name"]),
                                       ("retime.json", found.retimes, documents.read_retime, lambda d: d["sweep"]),
                                       ("capacity.json", found.capacities, documents.read_capacity,
                                        lambda d: d["sweep"])):
        for path in files.find(folder, name):  # the walk result.json is found by, dangling links included
            try:
                document = read(path, found.warnings)
            except Invalid as exc:
                found.warnings.append(f"skipped {exc}")
                continue
            held[(label, sweep_of(document))] = document


def _table(path: Path, record: dict, warnings: list[str]) -> pd.DataFrame | None:
    """A cell's epochs.csv or evals.csv, checked, with the cell's keys in front (None when absent
    or not believable: the cell stays, without that table)."""
    if not os.path.lexists(path):  # absent; anything else there is read, or refused with a warning
        return None
    try:
        frame = pd.DataFrame(read_table(path, bounded=quality_of([record]).bounded))
    except Invalid as exc:
        warnings.append(f"skipped {exc}")
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
    row = {
        "source": record["source"],
        "sweep": record.get("sweep"),
        "cell_id": record["cell_id"],
        "status": record.get("status"),
        "error": record.get("error"),
        "batch_size": settings.get("train", {}).get("batch_size"),
        "batch_schedule": schedule_of(settings),  # None: one batch size throughout
        "batch_switches": switches_of(settings),  # the same as (first step, batch) pairs
        "seed": settings.get("train", {}).get("seed"),
        # what else was swept, so batch sizes are only compared within one variant
        "variant": ", ".join(named + [f"{k}={v}" for k, v in sorted(other.items())]),
        "num_processes": env.get("num_processes"),
        "threads": env.get("cpu_threads"),
        **{f"env.{k}": env.get(k) for k in ENV_COLUMNS},
        # every summary key of harness/record/metrics.py is a column, None where a record lacks it (a cell
        # that has not finished, an older schema, no GPU), so the analysis never meets a missing column
        **dict.fromkeys(CELL_KEYS),
        **(record.get("summary") or {}),
    }
    if row["engine_mode"] is None and record.get("status") == "done":  # records from before train.mode auto
        row["engine_mode"] = settings.get("train", {}).get("mode", "eager")
    if row["energy_window_s"] is None and not energy_resolved(row["energy_j"], row["train_seconds"]):
        # records that predate the one-window rule, read with the older one (2 s of timed training in all)
        row["energy_j"] = row["joules_per_image"] = None
    return row


# the columns that hold the workload's metric (named for accuracy, the results format's names)
QUALITY_COLUMNS = ("train_accuracy", "val_accuracy", "test_accuracy", "best_val_accuracy", "test_accuracy_at_best_val",
                   "final_val_accuracy", "final_test_accuracy")


def quality_of(records: list[dict]) -> Quality:
    """The sweep's metric, from its first record's settings (accuracy for records without one)."""
    workload = ((records[0].get("settings") or {}).get("workload") or {}) if records else {}
    return Quality.of_workload(workload if isinstance(workload, dict) else {})


def oriented(frame: pd.DataFrame, quality: Quality) -> pd.DataFrame:
    """The frame with its metric columns where higher is better: negated for a min metric (negating
    twice gives the values back)."""
    if quality.higher_is_better or frame.empty:
        return frame
    present = [c for c in QUALITY_COLUMNS if c in frame.columns]
    return frame.assign(**{c: -pd.to_numeric(frame[c], errors="coerce") for c in present})


def unit_of_records(records: list[dict]) -> str:
    """What one example of the sweep is called, from its first record's settings."""
    workload = ((records[0].get("settings") or {}).get("workload") or {}) if records else {}
    return unit_of(workload if isinstance(workload, dict) else {})
