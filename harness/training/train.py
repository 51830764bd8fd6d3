"""Train one grid cell and record it: result.json says running, then what came of it. The loop
itself is training/cell_run.py's `CellRun`, on the cell's course.

No pandas, no seaborn here: the trainer only produces the files that the report reads.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from accelerate.utils.memory import release_memory, should_reduce_batch_size

from harness.errors import HarnessError, Interrupted
from harness.plan import Cell
from harness.record import locks, results
from harness.training import threads
from harness.training.cell_run import CellRun, Course, RunContext


def run_cell(cell: Cell, ctx: RunContext, sweep_dir: Path) -> str:
    """Train a cell and record it: status running first, then done / diverged / failed / oom; a cell
    asked to stop stays running, with its checkpoint, and returns "preempted"."""
    cell_dir = sweep_dir / cell.id
    main = ctx.accelerator.is_main_process
    environment = ctx.environment | threads.apply(cell.settings.train.threads)  # train.threads may be swept
    micro_batch = ctx.micro_batch(cell, _failed_micro_batch(cell_dir))
    record = results.start_record(sweep_dir.name, cell.id, cell.index, cell.swept,
                                  cell.settings.model_dump(mode="json"), environment, results.utc_now(), cell.workload)
    if main:
        cell_dir.mkdir(parents=True, exist_ok=True)
        results.write_result(cell_dir, record)
    error = None
    try:
        course = Course.of_cell(cell, ctx.checks, ctx.splits.n_train)
        status, summary = CellRun(cell, ctx, course, cell_dir, micro_batch).run()
    except HarnessError:
        raise  # the results folder itself failed (disk full...): stop the sweep with one line
    except Interrupted as exc:  # a second SIGTERM ended a step that hung: recorded, then the run stops
        status, summary, error = "failed", None, f"interrupted: {exc}"
        ctx.progress.message(f"{cell.id}: {error}")
        record = results.finish_record(record, status, summary, results.utc_now(), error)
        if main:
            results.write_result(cell_dir, record)
        raise
    except locks.LockLost as exc:  # another run took the cell over: its folder is not this run's to write
        ctx.progress.message(str(exc))
        return "lost"
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the cell fails; the record says why; the sweep goes on
        # Accelerate's test for an allocation failure (CUDA, XPU, MPS, the CPU allocator): recorded as
        # oom, never answered by shrinking the batch, which would change the cell
        status, summary = ("oom" if should_reduce_batch_size(exc) else "failed"), None
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SystemExit) else (
            f"SystemExit: sys.exit({exc.code!r}) was called while the cell trained (the workload's code: its "
            f"forward, loss or metric); a workload returns its answer or raises")
        if status == "oom":  # a rerun with train.micro_batch_size auto accumulates smaller micro-batches
            record["oom_micro_batch_size"] = micro_batch
        if main:
            results.write_atomic(cell_dir / "traceback.txt", traceback.format_exc())
        exc.__traceback__ = None  # drop the frames that hold the model and optimizer
        release_memory()  # garbage collection, then the device's cache
    if status == "preempted":  # still running as far as the sweep goes: its checkpoint waits
        record.update(preempted_utc=results.utc_now(), **summary)
    else:
        record = results.finish_record(record, status, summary, results.utc_now(), error)
    if main and locks.lost(cell_dir):
        ctx.progress.message(f"{cell.id}: its lock was taken over while it trained; stopped without writing its "
                             f"record: the run that took it over records the cell")
        return "lost"
    if main:
        results.write_result(cell_dir, record)
    return status



def _failed_micro_batch(cell_dir: Path) -> int | None:
    """The micro-batch a previous run of the cell ran out of memory with, if that is how it ended."""
    previous = results.read_result(cell_dir)
    if previous is None or previous.get("status") != "oom":
        return None
    failed = previous.get("oom_micro_batch_size")
    return failed if isinstance(failed, int) else None
