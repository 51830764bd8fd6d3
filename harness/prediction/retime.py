"""`harness retime RESULTS_DIR`: a finished folder's seconds per step measured again, on this
machine, without training: one timing pass per batch size (predict's: warm-up untimed, synced
windows until 200 steps and 2 s are read), at the settings of one of its done cells (the
learning rate changes nothing of a step's time). Written to retime.json beside the cells; the
report then reads each cell's time to target as its own steps x the re-timed seconds per step,
and says so. Run where the cells were trained, it replaces times a busy machine disturbed; on
another machine (the folder copied, or --device cpu), it gives that machine's sweet spot from the
same statistics.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from harness import batch_plan, timing
from harness.config import CellSettings, SweepConfig
from harness.errors import ResultsError
from harness.plan import Cell
from harness.prediction.runs import time_steps
from harness.record import documents, files, results
from harness.record.schema import Invalid
from harness.training.cell_run import RunContext
from harness.training.launch import load_data, make_accelerator
from harness.training.preemption import StopRequest
from harness.training.progress import Progress


def cells_to_time(sweep_dir: Path) -> tuple[SweepConfig, list[Cell]]:
    """The folder's config (plan.json) and, per batch size, the done cell whose settings are timed:
    the first fixed-batch cell by seed and id; its workload is found where the record says it ran.
    A batch a ramp (train.batch_schedule) trains at is timed too, at the ramp's settings with that
    batch fixed, so the report can time the ramp and the grid side by side."""
    try:
        config = SweepConfig.model_validate(documents.read_plan(sweep_dir / "plan.json")["config"])
    except (Invalid, ValueError) as exc:
        raise ResultsError(f"{sweep_dir}: no usable plan.json ({' '.join(str(exc).split())[:160]}); retime a sweep "
                           f"folder that `harness run` wrote (RESULTS_DIR/<sweep>)") from None
    done, ramped = {}, {}
    for path in sorted(files.find(sweep_dir, "result.json")):
        record, _ = results.record_state(path.parent)
        if record and record.get("status") == "done" and path.parent.name == record["cell_id"]:
            cell = Cell(index=record.get("cell_index", 0), id=record["cell_id"],
                        settings=CellSettings.model_validate(record["settings"]), swept=record.get("swept", {}),
                        workload=record.get("workload"))
            for batch, at_batch in _at_each_batch(cell):
                (ramped if at_batch is not cell else done).setdefault(batch, []).append(at_batch)
    for batch, found in ramped.items():
        done.setdefault(batch, found)
    if not done:
        raise ResultsError(f"no done cell under {sweep_dir}; retime times the batch sizes of finished cells")
    return config, [min(found, key=lambda c: (c.settings.train.seed, c.id)) for _, found in sorted(done.items())]


def _at_each_batch(cell: Cell) -> list[tuple[int, Cell]]:
    """(batch, the cell to time it with): a fixed cell itself; a ramp, once per batch of its
    schedule, its settings with that batch and no schedule."""
    train = cell.settings.train
    if train.batch_schedule is None:
        return [(cell.batch_size, cell)]
    out = []
    for _, batch in batch_plan.in_steps(train.batch_schedule, train.batch_schedule_unit):
        fixed = train.model_copy(update={"batch_size": batch, "batch_schedule": None})
        out.append((batch, dataclasses.replace(cell, id=f"{cell.id}-at-{batch}",
                                               settings=cell.settings.model_copy(update={"train": fixed}))))
    return out


def retime(sweep_dir: Path, folders: dict[str, Path] | None, progress: Progress) -> dict[str, Any]:
    """Time every batch size of the folder; writes retime.json (main process) and returns it."""
    config, cells = cells_to_time(sweep_dir)
    accelerator = make_accelerator(config, cells, sweep_dir)
    device_data, environment = load_data(accelerator, folders, cells)
    if accelerator.is_main_process and (busy := timing.busy_now()) is not None:
        progress.message(f"warning: {busy}")
    stop = StopRequest().install()
    timings = []
    for cell in cells:
        ctx = RunContext(accelerator=accelerator, splits=device_data.for_cell(cell), progress=progress, stop=stop,
                         checks=config.checks, environment=environment)
        found = time_steps(cell, ctx)
        timings.append({"batch_size": cell.batch_size, "cell_id": cell.id, **{k: found[k] for k in (
            "seconds_per_step", "window_seconds_per_step", "steps", "cpu_share", "load_average", "time_spread",
            "timing_disturbed_reason")}})
        progress.message(f"retime batch {cell.batch_size}: {found['seconds_per_step'] * 1e3:.3f} ms per step "
                         f"({found['steps']} steps" + (f"; disturbed: {found['timing_disturbed_reason']}" if
                                                       found["timing_disturbed_reason"] else "") + ")")
    doc = {"schema_version": documents.RETIME_SCHEMA_VERSION, "sweep": config.name, "created_utc": results.utc_now(),
           "environment": environment, "timings": timings}
    if accelerator.is_main_process:
        results.write_document(sweep_dir / "retime.json", doc)
    accelerator.wait_for_everyone()
    return doc


def summary_line(doc: dict[str, Any], started: float) -> str:
    device = (doc.get("environment") or {}).get("device_name") or "this machine"
    disturbed = [t["batch_size"] for t in doc["timings"] if t.get("timing_disturbed_reason")]
    return (f"re-timed {len(doc['timings'])} batch sizes on {device} in {time.perf_counter() - started:.1f} s"
            + (f"; disturbed at batch {', '.join(map(str, disturbed))}" if disturbed else ""))
