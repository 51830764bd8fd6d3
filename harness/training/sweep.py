"""One process's part of a sweep: one Accelerator, the data on its device, the cells in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from harness import plan, timing
from harness.config import SweepConfig, flatten
from harness.errors import EXIT_PREEMPTED
from harness.record import locks, results
from harness.training import capacity_job
from harness.training.cell_run import RunContext
from harness.training.launch import load_data, make_accelerator
from harness.training.measure import environment_command
from harness.training.preemption import StopRequest
from harness.training.progress import Progress
from harness.training.train import run_cell


@dataclass(frozen=True)
class Outcome:
    exit_code: int  # 0 all done, 1 a cell did not finish, EXIT_PREEMPTED asked to stop
    main_process: bool  # only the main process goes on to build the report


def run_sweep(config: SweepConfig, cells: list[plan.Cell], sweep_dir: Path, folders: dict[str, Path] | None,
              quiet: bool, all_cells: list[plan.Cell], fail_fast: bool = False,
              retrain: frozenset[str] = frozenset()) -> Outcome:
    """Train this process's share of `cells`, the done ones in `retrain` again; the caller (the
    CLI) then builds the report."""
    accelerator = make_accelerator(config, cells, sweep_dir)
    # Decided once, before any rank writes, so every rank agrees on what to train.
    todo = [c for c in cells if c.id in retrain or not results.is_done(sweep_dir / c.id)]
    # the data of every cell to train, on the device and tried, before anything is written
    device_data, environment = load_data(accelerator, folders, todo) if todo else (None, None)
    if accelerator.is_main_process:
        results.write_plan(sweep_dir, plan.plan_document(config, all_cells, environment_command()))
    progress = Progress(accelerator.is_main_process, quiet)
    if accelerator.is_main_process:
        keep_unreadable(todo, sweep_dir, progress)
        for cell in (c for c in todo if c.id in retrain and results.is_done(sweep_dir / c.id)):
            kept = results.set_aside(sweep_dir / cell.id, "retrained")
            progress.message(f"{cell.id}: training it again (--retrain); its record is kept as {kept.name}")
        if todo and (busy := timing.busy_now()) is not None:
            progress.message(f"warning: {busy}")
    accelerator.wait_for_everyone()
    progress.message(f"sweep {config.name}: {len(cells)} cells, {len(cells) - len(todo)} already done, "
                     f"{accelerator.num_processes} process(es) on {accelerator.device}")
    todo_ids = {c.id for c in todo}
    for cell in cells:
        if cell.id not in todo_ids:
            progress.message(f"skip {cell.id}: already done")
    if not todo:
        return _outcome(accelerator, {})

    if config.log_with:
        # trackers such as TensorBoard take flat scalar hyperparameters
        accelerator.init_trackers(config.name, config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                       for k, v in flatten(config.model_dump(mode="json")).items()})
    capacity_doc = _capacity(config, todo, accelerator, device_data, sweep_dir, progress)
    stop = StopRequest().install()
    progress.start_sweep([c.settings.sized(device_data.for_cell(c).n_train).total_steps for c in todo])
    statuses, held = {}, []
    for cell in todo:
        ctx = RunContext(accelerator=accelerator, splits=device_data.for_cell(cell), progress=progress, stop=stop,
                         checks=config.checks, environment=environment, capacity=capacity_doc)
        status = train_if_free(cell, ctx, sweep_dir)
        if status in ("held", "lost"):  # lost: taken over while this run trained it (it said so)
            held.append(cell.id)
        if status in (None, "held", "lost"):
            continue
        statuses[cell.id] = status
        if status == "failed" and fail_fast:
            progress.message(f"{cell.id}: failed; --fail-fast stops the sweep here")
            break
        if status == "preempted":
            progress.message(f"{cell.id}: {stop.signal_name} received; checkpoint saved, exiting to be requeued")
            progress.close()
            accelerator.end_training()
            return Outcome(EXIT_PREEMPTED, accelerator.is_main_process)
        progress.cell_finished()
        if status != "done":
            progress.message(f"{cell.id}: {status} (see {sweep_dir / cell.id / 'result.json'})")
    progress.close()
    if held:  # exit 0: nothing failed, but say plainly that this run did not train them
        progress.message(f"{len(held)} cell(s) not trained here: another live process holds them "
                         f"({', '.join(held)}); run again later to train any it leaves unfinished")
    return _outcome(accelerator, statuses)


def _capacity(config: SweepConfig, todo: list[plan.Cell], accelerator: Accelerator, device_data, sweep_dir: Path,
              progress: Progress) -> dict | None:
    """capacity.json for the cells with train.micro_batch_size auto: the one on record for this kind
    of launch, or measured now (in this process, before the first cell) where none covers them."""
    auto = [c for c in todo if c.settings.train.micro_batch_size == "auto"]
    if not auto:
        return None
    doc = capacity_job.read_capacity(sweep_dir, accelerator)
    if doc is not None and (not doc["bounded_by_need"] or doc["upper"] >= capacity_job.upper_bound(auto,
                                                                                                  accelerator.num_processes)):
        return doc
    progress.message(f"train.micro_batch_size=auto: measuring the largest micro-batch that fits "
                     f"({capacity_job.CAPACITY_FILE}; `harness capacity` does this alone)")
    return capacity_job.measure_capacity(config, auto, accelerator, device_data, sweep_dir)


def keep_unreadable(todo: list[plan.Cell], sweep_dir: Path, progress: Progress) -> None:
    """A cell whose result.json cannot be believed (corrupt, another schema, another cell's) is
    not done: its file is kept under another name, and the cell trains again."""
    for cell in todo:
        _, problem = results.record_state(sweep_dir / cell.id)
        if problem:
            kept = results.set_aside(sweep_dir / cell.id)
            progress.message(f"{cell.id}: not done, its record cannot be used ({problem}); kept as {kept.name}, "
                             f"training it again")


def train_if_free(cell: plan.Cell, ctx: RunContext, sweep_dir: Path) -> str | None:
    """Train the cell under its lock; None when another process holds it or has finished it."""
    accelerator, cell_dir = ctx.accelerator, sweep_dir / cell.id
    if not claim(accelerator, cell_dir):
        ctx.progress.message(f"skip {cell.id}: another process is training it (its lock is live)")
        return "held"
    try:
        if results.is_done(cell_dir):  # finished by another process since this one started
            ctx.progress.message(f"skip {cell.id}: already done")
            return None
        if not accelerator.is_main_process:
            return run_cell(cell, ctx, sweep_dir)
        with locks.Renewer(cell_dir):  # a long epoch never looks like a dead holder elsewhere
            return run_cell(cell, ctx, sweep_dir)
    finally:
        if accelerator.is_main_process:
            locks.release(cell_dir)


def claim(accelerator: Accelerator, cell_dir: Path) -> bool:
    """The main process takes the cell's lock; every rank learns the answer."""
    held = [locks.acquire(cell_dir) if accelerator.is_main_process else None]
    if held[0]:  # before any rank writes here: temps left by a killed trainer of this cell
        results.remove_stale_temps(cell_dir)
    if accelerator.num_processes > 1:
        broadcast_object_list(held, from_process=0)
    return bool(held[0])


def _outcome(accelerator: Accelerator, statuses: dict[str, str]) -> Outcome:
    accelerator.wait_for_everyone()
    accelerator.end_training()
    failed = {cid: s for cid, s in statuses.items() if s != "done"}
    return Outcome(1 if failed else 0, accelerator.is_main_process)
