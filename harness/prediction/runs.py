"""The part of `harness predict` that trains: short runs to the target, the timing pass, and the
order of the command. A short run is the first part of a grid cell (same settings, seed and image
order), stopped once its fitted crossing of the target is settled, or at the cell's own step
budget (epochs x steps per epoch). Every step runs through training/steps.py, as a cell's do.
Nothing here writes or changes a cell's result."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from harness import checks
from harness.analysis import crossing, per_batch
from harness.analysis.collect import collect
from harness.config import WARMUP_STEPS, CellSettings, CheckSettings, SweepConfig
from harness.errors import ConfigError
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
    timing_from_runs,
    why_no_fit,
)
from harness.training import diagnostics, measure, workloads
from harness.training.data import IndexStream, Splits, rank_slice
from harness.training.engine import Engine, build_engine
from harness.training.evaluation import validate
from harness.training.launch import load_data, make_accelerator
from harness.training.progress import Progress
from harness.training.steps import run_steps


def short_run(cell: Cell, accelerator: Accelerator, splits: Splits, target: float, cfg: CheckSettings) -> ShortRun:
    """Train the cell's settings until its fitted crossing of `target` is settled: the grid reads
    steps to target from the checks up to WIDTH x the crossing (analysis/crossing.py), so the short
    run trains that far, or to the cell's own step budget. As in a cell, the first warmup_steps are
    untimed and every stretch between checks is one synced window, so these windows time the batch
    size too (no separate timing pass for it)."""
    settings = cell.settings.sized(len(splits.train_y))
    engine = build_engine(settings, accelerator, splits, workloads.resolve(cell))
    batches = _batches(settings, accelerator, splits)
    run = ShortRun(settings.train.batch_size, settings.train.seed, settings.optim.lr_for(settings.train.batch_size),
                   False, None, 0, 0, 0.0, 0.0, None, [])
    warm_left, last_check = settings.train.warmup_steps, None
    schedule = checks.for_cell(settings, cfg)
    for point in schedule:
        order = batches(point - run.steps_done)
        warm = run_steps(engine, order.__getitem__, 0, min(warm_left, len(order)))
        timed = run_steps(engine, order.__getitem__, warm.steps, len(order))
        warm_left -= warm.steps
        if timed.steps:
            run.windows.append((timed.steps, timed.seconds))
        run.train_seconds += warm.seconds + timed.seconds
        run.steps_done = point
        if not checks.within_budget(run.check_seconds, run.train_seconds, last_check, cfg.budget,
                                    final=point == schedule[-1]):
            run.checks_skipped += 1  # over the checks' budget: train on to the next scheduled check
            continue
        with measure.SyncedTimer(accelerator.device) as check:
            correct, _ = validate(engine.eval_model, splits, accelerator, engine.workload)
        last_check = measure.over_ranks(accelerator, {"check_seconds": check.seconds})["check_seconds"]
        run.check_seconds += last_check
        run.checks.append((point, correct / len(splits.val_y)))
        if not run.reached and run.checks[-1][1] >= target:
            run.reached, run.steps_to_target = True, point
        elif not run.reached:
            run.steps_before = point
        if run.reached:
            found, run.settled = crossing.settled(*np.array(run.checks).T, target)
            run.crossing_steps = found.steps if found else None
            if run.settled:  # the grid's reading has every check it needs
                break
    run.noise_scale = _noise(engine, splits)
    return run


def _batches(settings: CellSettings, accelerator: Accelerator, splits: Splits) -> Callable[[int], torch.Tensor]:
    """The cell's sample order as a grid cell draws it: `batches(n)` gives this rank's indices for
    the next n steps, on the device."""
    stream = IndexStream(len(splits.train_y), settings.train.sampling, settings.train.seed)
    local = rank_slice(settings.train.batch_size, accelerator.process_index, accelerator.num_processes)
    batch = settings.train.batch_size
    return lambda count: stream.next(count * batch).view(count, -1)[:, local].to(accelerator.device)


def _noise(engine: Engine, splits: Splits) -> float | None:
    probe = diagnostics.NOISE_IMAGES
    return diagnostics.noise_scale(engine.eval_model, splits.train_x[:probe], splits.train_y[:probe],
                                   engine.workload.summed_loss)["noise_scale"]


def time_steps(cell: Cell, accelerator: Accelerator, splits: Splits) -> dict[str, Any]:
    """Seconds per step at the cell's batch size: its warm-up untimed, then synced windows of
    TIMING_WINDOW steps until at least TIMING_MIN_STEPS steps and TIMING_MIN_SECONDS seconds."""
    settings = cell.settings
    engine = build_engine(settings, accelerator, splits, workloads.resolve(cell))
    batches = _batches(settings, accelerator, splits)
    order = batches(max(settings.train.warmup_steps, WARMUP_STEPS))
    warm = run_steps(engine, order.__getitem__, 0, len(order))
    windows: list[tuple[int, float]] = []
    while sum(w[0] for w in windows) < TIMING_MIN_STEPS or sum(w[1] for w in windows) < TIMING_MIN_SECONDS:
        order = batches(TIMING_WINDOW)
        span = run_steps(engine, order.__getitem__, 0, TIMING_WINDOW)
        windows.append((span.steps, span.seconds))
    per_step = [seconds / steps for steps, seconds in windows]
    return {"batch_size": settings.train.batch_size, "learning_rate": settings.optim.lr_for(settings.train.batch_size),
            "source": "timing pass", "warmup_seconds": warm.seconds, "steps": sum(w[0] for w in windows),
            "seconds": sum(w[1] for w in windows), "seconds_per_step": float(np.median(per_step)),
            "window_seconds_per_step": per_step}


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
    rule = f"lr_scaling={config.optim.lr_scaling} from optim.lr={config.optim.lr} at batch {config.optim.lr_reference_batch}"
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


def cells_at(cells: list[Cell], batches: list[int], chosen: dict[int, Any], seeds: list[int] | None = None) -> list[Cell]:
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
    runs = [_announced_short_run(cell, accelerator, device_data.for_cell(cell), config, progress) for cell in short]
    timings = [_announced_timing(cell, runs, accelerator, device_data.for_cell(cell), progress) for cell in timed]
    fitted = fit_and_predict(runs, timings, grid_seeds=len({c.settings.train.seed for c in cells}))
    reason = None if fitted else why_no_fit(runs, target)
    if fitted and sweet_spot(fitted) is None:
        reason = (f"no batch size of the grid is predicted to reach {target} within its train.epochs "
                  f"(S_min {fitted['s_min']:,.0f} steps); raise train.epochs or lower report.target_accuracy")
    inputs = {"grid": grid, "grid_cells": [c.id for c in cells], "short_run_batch_sizes": short_run_batches(grid),
              "seeds": seeds, "target": target, "chosen_rates": {str(b): lr for b, lr in chosen.items()},
              "tolerance": config.report.tolerance, "learning_rate_source": source,
              "learning_rates": {str(t["batch_size"]): t["learning_rate"] for t in timings},
              "checks": config.checks.model_dump(),
              "timing": {"min_steps": TIMING_MIN_STEPS, "min_seconds": TIMING_MIN_SECONDS, "window": TIMING_WINDOW}}
    found = doubts(runs, fitted if not reason else None, target)
    doc = document(config.model_dump(mode="json"), inputs, runs, timings, fitted, started, reason, found)
    doc["environment"] = environment  # the device and threads its times were taken with
    if accelerator.is_main_process:
        output.write(sweep_dir, doc)
    if reason:
        raise ConfigError(f"{reason} (what was measured is in {sweep_dir / 'predict.json'})")
    if found and not force:
        more = f"; and {len(found) - 1} more doubt(s)" if len(found) > 1 else ""
        raise ConfigError(f"predict cannot vouch for batch {doc['sweet_spot']['batch_size']}: {found[0]['text']}{more} "
                          f"(what was measured is in {sweep_dir / 'predict.json'}; --force predicts anyway)")
    return doc


def _announced_short_run(cell: Cell, accelerator: Accelerator, splits: Splits, config: SweepConfig,
                    progress: Progress) -> ShortRun:
    target = config.report.target_accuracy
    run = short_run(cell, accelerator, splits, target, config.checks)
    progress.message(f"short run batch {run.batch_size} seed {run.seed}: " + (
        f"{target} crossed at ~{run.crossing_steps:,.0f} steps (first check above: {run.steps_to_target:,})"
        + ("" if run.settled else f", not settled within its {run.steps_done:,} steps") if run.reached
        else f"not at {target} within its {run.steps_done:,} steps") + f", {run.train_seconds:.1f} s")
    return run


def _announced_timing(cell: Cell, runs: list[ShortRun], accelerator: Accelerator, splits: Splits,
                 progress: Progress) -> dict[str, Any]:
    """A batch size's seconds per step: from its short runs' windows where it had any, else a timing pass."""
    ran = [r for r in runs if r.batch_size == cell.batch_size]
    timing = timing_from_runs(ran) if ran else time_steps(cell, accelerator, splits)
    timing["budget_steps"] = cell.settings.sized(len(splits.train_y)).total_steps
    progress.message(f"timing batch {cell.batch_size}: {timing['seconds_per_step'] * 1e3:.3f} ms per step "
                     f"({timing['steps']} steps, {timing['source']})")
    return timing
