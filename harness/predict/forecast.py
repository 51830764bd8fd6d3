"""`harness predict`: the sweet spot from a few short runs and a timing pass, without the grid.

Time to target = steps to target(B) x time per step(B). The first factor is statistics: short runs
to the target at three batch sizes of the grid fix S_min and B_noise of S(B) = S_min (1 + B_noise / B)
(harness/fit.py). The second is hardware: every batch size of the grid is timed for a few hundred
steps, with the engine and timing rules of a cell (warm-up excluded, synced windows). Which batch
sizes run to the target: the grid's at 2/7, 4/7 and 6/7 of the way along its sorted list (for
8..1024 in powers of 2: 32, 128 and 512); the smallest are left out because they cost the most per
image, the largest because at a fixed rate it may never reach the target. A short run's timed
windows also time its batch size; the others get a timing pass. A short run is the first part of a grid cell (same settings, seed and
image order), stopped at the first validation check at or above the target, or at the cell's own
step budget (epochs x steps per epoch). Nothing here writes or changes a cell's result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from harness.training import checks
from harness.training import diagnostics
from harness.training import measure
from harness.config import CheckSettings
from harness.training.data import IndexStream, Splits, rank_slice
from harness.training.engine import build_engine
from harness.errors import ConfigError
from harness.analysis.fit import fit_steps
from harness.plan import Cell
from harness.training.train import validate

PREDICT_SCHEMA_VERSION = 1
POSITIONS = (2 / 7, 4 / 7, 6 / 7)
TIMING_MIN_STEPS, TIMING_MIN_SECONDS, TIMING_WINDOW = 200, 2.0, 20
RESAMPLES = 2000


def short_run_batches(grid: list[int]) -> list[int]:
    sizes = sorted(set(grid))
    picks = sorted({sizes[round((len(sizes) - 1) * p)] for p in POSITIONS})
    return picks if len(picks) == 3 else sizes[-3:]  # a grid of 3 or 4: the positions coincide


@dataclass
class ShortRun:
    batch_size: int
    seed: int
    learning_rate: float
    reached: bool
    steps_to_target: int | None  # the first check at or above the target
    steps_before: int  # the check before it: the crossing lies in (steps_before, steps_to_target]
    steps_done: int
    train_seconds: float  # every training step, warm-up included (checks excluded)
    check_seconds: float
    noise_scale: float | None  # B_simple on the probe, where the run stopped
    windows: list[tuple[int, float]]  # (timed steps, seconds) per stretch between checks


def short_run(cell: Cell, acc: Accelerator, splits: Splits, target: float, cfg: CheckSettings) -> ShortRun:
    """Train the cell's settings until validation accuracy reaches `target` at a check. As in a
    cell, the first warmup_steps are untimed and every stretch between checks is one synced window,
    so these windows time the batch size too (no separate timing pass for it)."""
    s = cell.settings
    engine = build_engine(s, acc, splits)
    batches = _batches(s, acc, splits)
    run = ShortRun(s.train.batch_size, s.train.seed, s.optim.lr_for(s.train.batch_size), False, None, 0, 0, 0.0, 0.0,
                   None, [])
    warm = s.train.warmup_steps
    for point in checks.for_cell(s, cfg):
        order = batches(point - run.steps_done)
        untimed, warm = order[:warm], max(0, warm - len(order))
        with measure.SyncedTimer(acc.device) as warming:
            for idx in untimed:
                engine.step(idx)
        with measure.SyncedTimer(acc.device) as clock:
            for idx in order[len(untimed):]:
                engine.step(idx)
        if len(order) > len(untimed):
            run.windows.append((len(order) - len(untimed), clock.seconds))
        run.train_seconds += warming.seconds + clock.seconds
        run.steps_done = point
        with measure.SyncedTimer(acc.device) as check:
            correct, _ = validate(engine.eval_model, splits, acc)
        run.check_seconds += check.seconds
        if correct / len(splits.val_y) >= target:
            run.reached, run.steps_to_target = True, point
            break
        run.steps_before = point
    run.noise_scale = _noise(engine, splits)
    return run


def _batches(s, acc: Accelerator, splits: Splits) -> Callable[[int], torch.Tensor]:
    """The cell's sample order as a grid cell draws it: `batches(n)` gives this rank's indices for
    the next n steps, on the device."""
    stream = IndexStream(len(splits.train_y), s.train.sampling, s.train.seed)
    local = rank_slice(s.train.batch_size, acc.process_index, acc.num_processes)
    return lambda count: stream.next(count * s.train.batch_size).view(count, -1)[:, local].to(acc.device)


def timing_from_runs(runs: list[ShortRun]) -> dict[str, Any]:
    """Seconds per step of a batch size from its short runs' timed windows (those of at least
    TIMING_WINDOW steps, where there are any: a one-step window is mostly its two syncs)."""
    windows = [w for r in runs for w in r.windows]
    long = [w for w in windows if w[0] >= TIMING_WINDOW] or windows
    rates = [seconds / steps for steps, seconds in long]
    return {"batch_size": runs[0].batch_size, "learning_rate": runs[0].learning_rate, "source": "short runs",
            "warmup_seconds": 0.0, "steps": sum(w[0] for w in windows), "seconds": 0.0,  # counted in the runs
            "seconds_per_step": float(np.median(rates)), "window_seconds_per_step": rates}


def _noise(engine, splits: Splits) -> float | None:
    probe = diagnostics.NOISE_IMAGES
    return diagnostics.noise_scale(engine.eval_model, splits.train_x[:probe], splits.train_y[:probe])["noise_scale"]


def time_steps(cell: Cell, acc: Accelerator, splits: Splits) -> dict[str, Any]:
    """Seconds per step at the cell's batch size: its warm-up untimed, then synced windows of
    TIMING_WINDOW steps until at least TIMING_MIN_STEPS steps and TIMING_MIN_SECONDS seconds."""
    s = cell.settings
    engine = build_engine(s, acc, splits)
    batches = _batches(s, acc, splits)
    with measure.SyncedTimer(acc.device) as warm:
        for idx in batches(max(s.train.warmup_steps, 5)):
            engine.step(idx)
    windows: list[tuple[int, float]] = []
    while sum(w[0] for w in windows) < TIMING_MIN_STEPS or sum(w[1] for w in windows) < TIMING_MIN_SECONDS:
        order = batches(TIMING_WINDOW)
        with measure.SyncedTimer(acc.device) as clock:
            for idx in order:
                engine.step(idx)
        windows.append((TIMING_WINDOW, measure.over_ranks(acc, {"window_seconds": clock.seconds})["window_seconds"]))
    rates = [seconds / steps for steps, seconds in windows]
    return {"batch_size": s.train.batch_size, "learning_rate": s.optim.lr_for(s.train.batch_size),
            "source": "timing pass", "warmup_seconds": warm.seconds, "steps": sum(w[0] for w in windows),
            "seconds": sum(w[1] for w in windows), "seconds_per_step": float(np.median(rates)),
            "window_seconds_per_step": rates}


def fit_and_predict(runs: list[ShortRun], timings: list[dict], seed: int = 0) -> dict[str, Any] | None:
    """S_min and B_noise with 90% intervals (a bootstrap over the short runs' seeds and the crossing
    within each check's resolution), and steps and time to target for every timed batch size. The
    steps predicted are where the target is crossed; a grid cell reports the first check after the
    crossing, up to one check interval (< 10%) later."""
    reached = [r for r in runs if r.reached]
    # the crossing lies in (steps_before, steps_to_target]: the point fit takes each middle, the
    # bootstrap draws within it
    point = fit_steps([r.batch_size for r in reached], [(r.steps_before + r.steps_to_target) / 2 for r in reached])
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    by_batch: dict[int, list[ShortRun]] = {}
    for r in reached:
        by_batch.setdefault(r.batch_size, []).append(r)
    grid = np.array([t["batch_size"] for t in timings], dtype=float)
    # a batch size whose predicted crossing lies beyond the steps its epochs allow does not reach the
    # target in a grid cell either (the H200's batch 2048: 152 steps predicted, 107 allowed)
    budget = np.array([t.get("budget_steps") or np.inf for t in timings], dtype=float)
    fits, steps_draws, time_draws = [], [], []  # time: every draw, whether or not within the epochs
    for _ in range(RESAMPLES):
        sample = [(b, rng.uniform(r.steps_before, r.steps_to_target)) for b, group in by_batch.items()
                  for r in (group[i] for i in rng.integers(len(group), size=len(group)))]
        model = fit_steps([b for b, _ in sample], [x for _, x in sample])
        if model is None:
            continue
        fits.append((model.s_min, model.b_noise))
        steps = model.steps(grid)
        steps_draws.append(steps)
        time_draws.append(steps * np.array([rng.choice(t["window_seconds_per_step"]) for t in timings]))
    fits, steps_draws, time_draws = np.array(fits), np.array(steps_draws), np.array(time_draws)
    q = [0.05, 0.95]
    winners = np.array([])
    if len(time_draws):  # a draw's winner: the fastest batch size that reaches the target within its epochs
        eligible = np.where(steps_draws <= budget, time_draws, np.inf)
        some = np.isfinite(eligible).any(axis=1)
        winners = grid[np.argmin(eligible[some], axis=1)]
    predictions = []
    for j, t in enumerate(timings):
        steps = float(point.steps(grid[j]))
        predictions.append({
            "batch_size": t["batch_size"], "steps_to_target": steps,
            "steps_interval": np.quantile(steps_draws[:, j], q).tolist() if len(steps_draws) else None,
            "budget_steps": t.get("budget_steps"), "within_budget": bool(steps <= budget[j]),
            "time_to_target_s": steps * t["seconds_per_step"],
            "time_interval_s": np.quantile(time_draws[:, j], q).tolist() if len(time_draws) else None,
            "win_share": float(np.sum(winners == grid[j]) / len(time_draws)) if len(time_draws) else None})
    return {"s_min": point.s_min, "b_noise": point.b_noise,
            "s_min_interval": np.quantile(fits[:, 0], q).tolist() if len(fits) else None,
            "b_noise_interval": np.quantile(fits[:, 1], q).tolist() if len(fits) else None,
            "converged_resamples": len(fits) / RESAMPLES, "points": point.points, "predictions": predictions}


def sweet_spot(fitted: dict[str, Any]) -> dict[str, Any] | None:
    """The batch size with the shortest predicted time to target among those predicted to reach it
    within their epochs, and its neighbours in the grid; None where none is."""
    rows = fitted["predictions"]
    within = [i for i, r in enumerate(rows) if r.get("within_budget", True)]
    if not within:
        return None
    best = min(within, key=lambda i: (rows[i]["time_to_target_s"], rows[i]["batch_size"]))
    neighbours = [rows[i]["batch_size"] for i in (best - 1, best + 1) if 0 <= i < len(rows)]
    return {"batch_size": rows[best]["batch_size"], "neighbours": neighbours}


def document(config: dict, inputs: dict, runs: list[ShortRun], timings: list[dict], fitted: dict | None,
             started: float, reason: str | None = None) -> dict[str, Any]:
    spent = sum(r.train_seconds for r in runs) + sum(t["seconds"] + t["warmup_seconds"] for t in timings)
    return {"schema_version": PREDICT_SCHEMA_VERSION, "created_utc": measure.utc_now(), "config": config,
            "inputs": inputs, "short_runs": [asdict(r) for r in runs], "timing": timings, "fit": fitted,
            "sweet_spot": sweet_spot(fitted) if fitted else None, "failure": reason,
            "b_simple": _median([r.noise_scale for r in runs]),
            "cost": {"train_seconds": spent, "check_seconds": sum(r.check_seconds for r in runs),
                     "wall_seconds": time.perf_counter() - started}}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(known)) if known else None


# --- the command: which cells, in what order, and what is written ------------------------------

def check_grid(config, cells: list[Cell]) -> None:
    """What predict needs from a sweep, refused before anything runs."""
    others = sorted({k for c in cells for k in c.swept} - {"train.batch_size", "train.seed", "optim.lr"})
    if config.variants or others:
        raise ConfigError(f"predict fits one batch-size grid; the sweep also varies {', '.join(others) or 'variants'}: "
                          f"pin them with --set (one prediction per setting)")
    grid = sorted({c.batch_size for c in cells})
    if len(grid) < 3:
        raise ConfigError(f"sweep.train.batch_size lists {len(grid)} batch size(s); predict needs at least 3 (it fits "
                          f"two parameters from runs at three of them); list more, e.g. [16, 64, 256, 1024]")


def rates(config, cells: list[Cell], sweep_dir: Path) -> tuple[dict[int, Any], str]:
    """The swept optim.lr value each batch size is predicted at, and where it comes from."""
    swept = sorted({c.swept.get("optim.lr") for c in cells} - {None})
    rule = f"lr_scaling={config.optim.lr_scaling} from optim.lr={config.optim.lr} at batch {config.optim.lr_reference_batch}"
    if len(swept) < 2:
        return {c.batch_size: c.swept.get("optim.lr") for c in cells}, f"the config's rule ({rule})"
    middle = swept[len(swept) // 2]
    tuned = _tuned_rates(config, sweep_dir)
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


def _tuned_rates(config, sweep_dir: Path) -> dict[int, float]:
    """The learning rate the analysis picked per batch size, from done cells already in the folder."""
    from harness.analysis import per_batch as analysis
    from harness.analysis.collect import collect

    if not sweep_dir.is_dir():
        return {}
    found = collect([sweep_dir])
    if found.cells.empty:
        return {}
    cells = analysis.add_time_to_target(found.cells, found.checks, found.epochs, config.report.target_accuracy)
    picked = analysis.by_batch_size(cells, config.report.tolerance)
    reached = picked[picked["reached_target"] > 0]
    return {int(r.batch_size): float(r.learning_rate) for r in reached.itertuples()}


def cells_at(cells: list[Cell], batches: list[int], chosen: dict[int, Any], seeds: list[int] | None = None) -> list[Cell]:
    return [c for c in cells if c.batch_size in batches and c.swept.get("optim.lr") == chosen[c.batch_size]
            and (seeds is None or c.settings.train.seed in seeds)]


def run(config, cells: list[Cell], sweep_dir: Path, folders: dict[str, Path] | None, progress) -> dict[str, Any]:
    """Short runs, the timing pass and the fit; writes sweep_dir/predict.json (main process)."""
    from harness.record import results
    from harness.training.sweep import load_data, make_accelerator

    started = time.perf_counter()
    grid = sorted({c.batch_size for c in cells})
    chosen, source = rates(config, cells, sweep_dir)
    seeds = sorted({c.settings.train.seed for c in cells})[:2]
    short = cells_at(cells, short_run_batches(grid), chosen, seeds)
    timed = [next(c for c in cells_at(cells, [b], chosen, seeds[:1])) for b in grid]
    acc = make_accelerator(config, short + timed, sweep_dir)
    device_data, _ = load_data(acc, folders, short[0])
    target = config.report.target_accuracy
    runs = []
    for cell in short:
        runs.append(short_run(cell, acc, device_data.for_cell(cell.settings), target, config.checks))
        r = runs[-1]
        progress.message(f"short run batch {r.batch_size} seed {r.seed}: " + (
            f"{target} at step {r.steps_to_target:,} (previous check {r.steps_before:,})" if r.reached
            else f"not at {target} within its {r.steps_done:,} steps") + f", {r.train_seconds:.1f} s")
    timings = []
    for cell in timed:
        ran = [r for r in runs if r.batch_size == cell.batch_size]
        timings.append(timing_from_runs(ran) if ran else time_steps(cell, acc, device_data.for_cell(cell.settings)))
        timings[-1]["budget_steps"] = cell.settings.total_steps
        progress.message(f"timing batch {cell.batch_size}: {timings[-1]['seconds_per_step'] * 1e3:.3f} ms per step "
                         f"({timings[-1]['steps']} steps, {timings[-1]['source']})")
    fitted = fit_and_predict(runs, timings)
    reason = None if fitted else _why_no_fit(runs, target)
    if fitted and sweet_spot(fitted) is None:
        reason = (f"no batch size of the grid is predicted to reach {target} within its train.epochs "
                  f"(S_min {fitted['s_min']:,.0f} steps); raise train.epochs or lower report.target_accuracy")
    inputs = {"grid": grid, "grid_cells": [c.id for c in cells], "short_run_batch_sizes": short_run_batches(grid),
              "seeds": seeds, "target": target,
              "chosen_rates": {str(b): lr for b, lr in chosen.items()},
              "tolerance": config.report.tolerance, "learning_rate_source": source,
              "learning_rates": {str(t["batch_size"]): t["learning_rate"] for t in timings},
              "checks": config.checks.model_dump(), "timing": {"min_steps": TIMING_MIN_STEPS,
                                                               "min_seconds": TIMING_MIN_SECONDS, "window": TIMING_WINDOW}}
    doc = document(config.model_dump(mode="json"), inputs, runs, timings, fitted, started, reason)
    if acc.is_main_process:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        results.write_atomic(sweep_dir / "predict.json", json.dumps(results.finite_or_null(doc), indent=2) + "\n")
    if reason:
        raise ConfigError(f"{reason} (what was measured is in {sweep_dir / 'predict.json'})")
    return doc


def _why_no_fit(runs: list[ShortRun], target: float) -> str:
    reached = sorted({r.batch_size for r in runs if r.reached})
    if len(reached) < 2:
        return (f"no fit: only {len(reached)} of the short runs' batch sizes ({', '.join(map(str, reached)) or 'none'}) "
                f"reached {target} within its step budget (train.epochs x steps per epoch); lower "
                f"report.target_accuracy or raise train.epochs")
    return (f"the fit of S(B) = S_min (1 + B_noise / B) did not converge: steps to {target} did not fall with the batch "
            f"size ({', '.join(f'{r.batch_size}: {r.steps_to_target}' for r in runs if r.reached)}); the learning "
            f"rate rule may not suit these batch sizes: tune optim.lr per batch size (configs/lr_tuned.yaml)")


def reusable(config, sweep_dir: Path) -> dict[str, Any] | None:
    """The folder's predict.json, when it was made from this very config and has a sweet spot."""
    try:
        doc = json.loads((sweep_dir / "predict.json").read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(doc, dict) and doc.get("config") == json.loads(json.dumps(config.model_dump(mode="json")))
    return doc if same and doc.get("sweet_spot") and doc.get("schema_version") == PREDICT_SCHEMA_VERSION else None


def table(doc: dict[str, Any]) -> str:
    """The predicted sweet spot with its neighbours, in one short table."""
    rows, spot = doc["fit"]["predictions"], doc["sweet_spot"]
    shown = {spot["batch_size"], *spot["neighbours"]}
    lines = [f"predicted sweet spot: batch size {spot['batch_size']} (B_noise {doc['fit']['b_noise']:,.0f}, "
             f"S_min {doc['fit']['s_min']:,.0f} steps; B_simple {doc['b_simple'] or float('nan'):,.0f})",
             f"{'batch':>7} {'steps to target (90%)':>26} {'ms/step':>9} {'time to target (90%)':>26} {'wins':>6}"]
    for r in rows:
        if r["batch_size"] not in shown:
            continue
        steps = f"{r['steps_to_target']:,.0f} ({r['steps_interval'][0]:,.0f}-{r['steps_interval'][1]:,.0f})"
        time_s = f"{r['time_to_target_s']:.3g} s ({r['time_interval_s'][0]:.3g}-{r['time_interval_s'][1]:.3g})"
        mark = ">" if r["batch_size"] == spot["batch_size"] else " "
        per_step = r["time_to_target_s"] / r["steps_to_target"] * 1e3
        beyond = "" if r.get("within_budget", True) else f"  beyond its epochs ({r['budget_steps']:,} steps)"
        lines.append(f"{mark}{r['batch_size']:>6} {steps:>26} {per_step:>9.3f} {time_s:>26} {r['win_share']:>6.0%}{beyond}")
    cost = doc["cost"]
    lines.append(f"cost: {cost['train_seconds']:.1f} s of training, {cost['check_seconds']:.1f} s of checks, "
                 f"{cost['wall_seconds']:.1f} s wall")
    return "\n".join(lines)
