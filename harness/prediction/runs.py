"""The part of `harness predict` that trains: short runs to the target, the timing pass, and the
order of the command. A short run is the first part of a grid cell (same settings, seed and image
order, the same loop: training/cell_run.py), stopped once its fitted crossing of the target is
settled, or at its cap: predict.short_run_cap times the cell's train.epochs (the grid's budget
bounds the grid's cells, not the short runs). Nothing here writes or changes a cell's result."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import checks, timing
from harness.analysis import crossing, per_batch
from harness.analysis.collect import collect
from harness.config import WARMUP_STEPS, SweepConfig
from harness.errors import ConfigError, StopRequested
from harness.plan import Cell
from harness.prediction import output
from harness.prediction.forecast import (
    TIMING_MIN_SECONDS,
    TIMING_MIN_STEPS,
    TIMING_WINDOW,
    ShortRun,
    document,
    doubts,
    fit_and_predict,
    short_run_batches,
    sweet_spot,
    timed_windows,
    timing_from_runs,
    why_no_fit,
)
from harness.training import diagnostics
from harness.training.cell_run import CellRun, Course, RunContext
from harness.training.checkpoint import Window
from harness.training.launch import load_data, make_accelerator
from harness.training.preemption import StopRequest
from harness.training.progress import Progress


def short_run(cell: Cell, ctx: RunContext, target: float, cap: float = 3.0) -> ShortRun:
    """Train the cell's settings until its fitted crossing of `target` is settled: the grid reads
    steps to target from the checks up to WIDTH x the crossing (analysis/crossing.py), so the short
    run trains that far, or to its cap (`cap` x the cell's epochs). It is a grid cell's loop
    (CellRun) on the cell's check schedule carried on past its epochs, writing nothing: the first
    untimed_steps are untimed and every stretch between checks is one synced window, so these
    windows time the batch size too."""
    settings = cell.settings.sized(ctx.splits.n_train)
    epochs = math.ceil(cap * settings.train.epochs)
    longer = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": epochs})})
    longer = longer.sized(ctx.splits.n_train)
    course = Course(ends=tuple(checks.for_cell(longer, ctx.checks)), warmup_steps=settings.train.untimed_steps,
                    cap_steps=longer.total_steps, records=False, done=lambda run: _settled(run, target)[1])
    run = _run(cell, ctx, course, f"short run batch {cell.batch_size} seed {settings.train.seed}")
    measured = [(e["step"], e["val_accuracy"]) for e in run.state.evals]
    metric = settings.workload.quality
    first = next((step for step, value in measured if metric.reached(value, target)), None)
    found, settled = _settled(run, target)
    return ShortRun(batch_size=settings.train.batch_size, seed=settings.train.seed,
                    learning_rate=settings.optim.lr_for(settings.train.batch_size), reached=first is not None,
                    steps_to_target=first, steps_before=max((s for s, _ in measured if first is None or s < first),
                                                            default=0),
                    steps_done=run.state.global_step, train_seconds=run.state.trained_seconds,
                    check_seconds=sum(e["check_seconds"] for e in run.state.evals), noise_scale=_noise(run),
                    windows=[(w.steps, w.seconds) for w in run.windows if w.steps],
                    checks_skipped=run.state.checks_skipped, checks=measured,
                    crossing_steps=found.steps if found else None, settled=settled, cap_steps=course.cap_steps,
                    val_examples=ctx.splits.n_val, metric_mode=metric.mode, metric_bounded=metric.bounded)


def _settled(run: CellRun, target: float) -> tuple[crossing.Crossing | None, bool]:
    """The fitted crossing of `target` by the run's checks so far, and whether the checks reach far
    enough past it for the grid to read the same (analysis/crossing.py), read where higher is better."""
    oriented = run.settings.workload.quality.oriented
    measured = [(e["step"], oriented(e["val_accuracy"])) for e in run.state.evals]
    if not any(value >= oriented(target) for _, value in measured):
        return None, False
    return crossing.settled(*np.array(measured).T, oriented(target))


def _run(cell: Cell, ctx: RunContext, course: Course, name: str) -> CellRun:
    """The run trained to the end of its course; StopRequested where a stop request ended it."""
    run = CellRun(cell, ctx, course)
    status, _ = run.run()
    if status == "preempted":
        raise StopRequested(f"{ctx.stop.signal_name} received during the {name} at step {run.state.global_step:,}; "
                            f"predict keeps nothing of an unfinished prediction: run it again")
    return run


def _noise(run: CellRun) -> float | None:
    probe, engine, splits = diagnostics.NOISE_IMAGES, run.engine, run.ctx.splits
    return diagnostics.noise_scale(engine.eval_model, *splits.train_prefix(probe),
                                   engine.workload.summed_loss)["noise_scale"]


def time_steps(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    """Seconds per step at the cell's batch size: its warm-up untimed, then synced windows of
    TIMING_WINDOW steps (epoch ends cut some short) until the windows read (forecast.timed_windows)
    hold at least TIMING_MIN_STEPS steps and TIMING_MIN_SECONDS seconds: a grid cell's loop
    (CellRun) that checks nothing and writes nothing."""
    settings = cell.settings
    warm = max(settings.train.untimed_steps, WARMUP_STEPS)
    course = Course(ends=(warm,), warmup_steps=warm, cap_steps=None, validates=False, records=False,
                    every=TIMING_WINDOW, done=lambda run: _timed_enough(run.windows))
    run = _run(cell, ctx, course, f"timing pass at batch {cell.batch_size}")
    windows = [(w.steps, w.seconds) for w in run.windows if w.steps]
    per_step = [seconds / steps for steps, seconds in timed_windows(windows)]
    return {"batch_size": settings.train.batch_size, "learning_rate": settings.optim.lr_for(settings.train.batch_size),
            "source": "timing pass", "warmup_seconds": run.state.warmup_seconds, "steps": sum(w[0] for w in windows),
            "seconds": sum(w[1] for w in windows), "seconds_per_step": float(np.median(per_step)),
            "window_seconds_per_step": per_step,
            **pass_conditions(run.windows, per_step, ctx.accelerator.device.type, ctx.accelerator.num_processes)}


def pass_conditions(windows: list[Window], per_step: list[float], device_type: str,
                    processes: int = 1) -> dict[str, Any]:
    """What a timing pass competed with (harness/timing.py): its CPU share, load, windows' spread."""
    seconds = sum(w.seconds for w in windows)
    share = timing.cpu_share(sum(w.cpu_seconds for w in windows), seconds, torch.get_num_threads())
    loads = [x for w in windows for x in (w.load_start, w.load_end) if x is not None]
    load = float(np.median(loads)) if loads else None
    spread, _ = timing.spread_of(per_step)
    found = timing.reasons(share, load, spread, device_type, processes=processes)
    return {"cpu_share": share, "load_average": load, "time_spread": spread,
            "timing_disturbed_reason": "; ".join(found) or None}


def _timed_enough(windows: list[Window]) -> bool:
    read = timed_windows([(w.steps, w.seconds) for w in windows if w.steps])
    return sum(w[0] for w in read) >= TIMING_MIN_STEPS and sum(w[1] for w in read) >= TIMING_MIN_SECONDS


def check_grid(config: SweepConfig, cells: list[Cell]) -> None:
    """What predict needs from a sweep, refused before anything runs."""
    others = sorted({k for c in cells for k in c.swept} - {"train.batch_size", "train.seed", "optim.lr"})
    if config.variants or others:
        raise ConfigError(f"predict fits one batch-size grid; the sweep also varies {', '.join(others) or 'variants'}: "
                          f"pin them with --set (one prediction per setting)")
    grid = sorted({c.batch_size for c in cells})
    if len(grid) < 3:
        raise ConfigError(f"sweep.train.batch_size lists {len(grid)} batch size(s); predict needs at least 3 (it fits "
                          f"two parameters from runs at three of them); list more, e.g. [16, 64, 256, 1024]")


def chosen_rates(config: SweepConfig, cells: list[Cell], sweep_dir: Path) -> tuple[dict[int, Any], str]:
    """The swept optim.lr value each batch size is predicted at, and where it comes from."""
    swept = sorted({c.swept.get("optim.lr") for c in cells} - {None})
    optim = config.optim
    rule = f"lr_scaling={optim.lr_scaling} from optim.lr={optim.lr} at batch {optim.lr_reference_batch}"
    if len(swept) < 2:
        return {c.batch_size: c.swept.get("optim.lr") for c in cells}, f"the config's rule ({rule})"
    middle = swept[len(swept) // 2]
    found = collect([sweep_dir]) if sweep_dir.is_dir() else None
    tuned = per_batch.picked_rates(found, config.report) if found is not None else {}
    chosen = {}
    for cell in cells:
        picked = tuned.get(cell.batch_size)
        if picked is not None and math.isclose(cell.settings.optim.lr_for(cell.batch_size), picked, rel_tol=1e-9):
            chosen[cell.batch_size] = cell.swept["optim.lr"]
        chosen.setdefault(cell.batch_size, None)
    known = {b for b, lr in chosen.items() if lr is not None}
    chosen = {b: (lr if lr is not None else middle) for b, lr in chosen.items()}
    return chosen, (f"tuned per batch size from the results folder for {len(known)} of {len(chosen)} batch sizes; "
                    f"the middle swept rate (optim.lr={middle}, {rule}) for the others")


def cells_at(cells: list[Cell], batches: list[int], chosen: dict[int, Any],
             seeds: list[int] | None = None) -> list[Cell]:
    return [c for c in cells if c.batch_size in batches and c.swept.get("optim.lr") == chosen[c.batch_size]
            and (seeds is None or c.settings.train.seed in seeds)]


def predict_sweep(config: SweepConfig, cells: list[Cell], sweep_dir: Path, folders: dict[str, Path] | None,
                  progress: Progress, force: bool = False) -> dict[str, Any]:
    """Short runs, the timing pass and the fit; writes sweep_dir/predict.json (main process). Where
    the prediction doubts itself it stops with one line (exit 2) unless `force`."""
    started = time.perf_counter()
    grid = sorted({c.batch_size for c in cells})
    chosen, source = chosen_rates(config, cells, sweep_dir)
    seeds = sorted({c.settings.train.seed for c in cells})[:2]
    short = cells_at(cells, short_run_batches(grid), chosen, seeds)
    timed = [next(c for c in cells_at(cells, [b], chosen, seeds[:1])) for b in grid]
    accelerator = make_accelerator(config, short + timed, sweep_dir)
    device_data, environment = load_data(accelerator, folders, short + timed)
    target = config.report.target_accuracy
    stop = StopRequest().install()
    if accelerator.is_main_process and (busy := timing.busy_now()) is not None:
        progress.message(f"warning: {busy}")

    def context(cell: Cell) -> RunContext:
        return RunContext(accelerator=accelerator, splits=device_data.for_cell(cell), progress=progress, stop=stop,
                          checks=config.checks, environment=environment)

    cap = config.predict.short_run_cap
    runs = [_announced_short_run(cell, context(cell), target, cap) for cell in short]
    timings = [_announced_timing(cell, runs, context(cell)) for cell in timed]
    fitted = fit_and_predict(runs, timings, grid_seeds=len({c.settings.train.seed for c in cells}))
    reason = None if fitted else why_no_fit(runs, target, cap)
    if fitted and sweet_spot(fitted) is None:
        reason = (f"no batch size of the grid is predicted to reach {target} within its train.epochs "
                  f"(S_min {fitted['s_min']:,.0f} steps); raise train.epochs or "
                  f"{'lower' if config.workload.quality.higher_is_better else 'raise'} report.target")
    inputs = {"grid": grid, "grid_cells": [c.id for c in cells], "short_run_batch_sizes": short_run_batches(grid),
              "seeds": seeds, "target": target, "chosen_rates": {str(b): lr for b, lr in chosen.items()},
              "tolerance": config.report.tolerance, "learning_rate_source": source,
              "learning_rates": {str(t["batch_size"]): t["learning_rate"] for t in timings},
              "checks": config.checks.model_dump(),
              "timing": {"min_steps": TIMING_MIN_STEPS, "min_seconds": TIMING_MIN_SECONDS, "window": TIMING_WINDOW},
              "short_run_cap": cap}
    found = doubts(runs, fitted if not reason else None, target, cap, timings)
    ceiling = next((d for d in found if d["kind"] == "near_ceiling"), None)
    if reason and fitted and ceiling:  # a fit from crossings near the ceiling: that is the cause
        reason = f"{ceiling['text']} ({reason})"
    doc = document(config.model_dump(mode="json"), inputs, runs, timings, fitted, started, reason, found)
    doc["environment"] = environment  # the device and threads its times were taken with
    written = sweep_dir / "predict.json"
    if accelerator.is_main_process:
        written = output.write(sweep_dir, doc, vouched=force or not (reason or found))
    if reason:
        raise ConfigError(f"{reason} (what was measured is in {written})")
    if found and not force:
        more = f"; and {len(found) - 1} more doubt(s)" if len(found) > 1 else ""
        raise ConfigError(f"predict cannot vouch for batch {doc['sweet_spot']['batch_size']}: {found[0]['text']}{more} "
                          f"(what was measured is in {written}; --force predicts anyway)")
    return doc


def _announced_short_run(cell: Cell, ctx: RunContext, target: float, cap: float) -> ShortRun:
    run = short_run(cell, ctx, target, cap)
    side = "above" if run.metric_mode == "max" else "below"
    ctx.progress.message(f"short run batch {run.batch_size} seed {run.seed}: " + (
        f"{target} crossed at ~{run.crossing_steps:,.0f} steps (first check {side}: {run.steps_to_target:,})"
        + ("" if run.settled else f", not settled within its {run.steps_done:,} steps") if run.reached
        else f"not at {target} within its {run.steps_done:,} steps") + f", {run.train_seconds:.1f} s")
    return run


def _announced_timing(cell: Cell, runs: list[ShortRun], ctx: RunContext) -> dict[str, Any]:
    """A batch size's seconds per step: from its short runs' windows where it had any, else a timing pass."""
    ran = [r for r in runs if r.batch_size == cell.batch_size]
    timing = timing_from_runs(ran) if ran else time_steps(cell, ctx)
    timing["budget_steps"] = cell.settings.sized(ctx.splits.n_train).total_steps
    ctx.progress.message(f"timing batch {cell.batch_size}: {timing['seconds_per_step'] * 1e3:.3f} ms per step "
                     f"({timing['steps']} steps, {timing['source']})")
    return timing
