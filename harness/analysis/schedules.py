"""Cells with a train.batch_schedule (a batch-size ramp) beside the grid's fixed batch sizes.

A ramp has no one batch size, so it stays out of the per-batch analysis and is compared whole: its
time to target is its training clock at the fitted crossing of the target (interpolated between
the checks around it, the untimed warm-up left out), and so, for this comparison, is every fixed
cell's: both sides measured the same way. Where `harness retime` timed every batch size the
compared cells train at (a ramp's later batches too), both sides are instead each cell's steps to
target at each batch times that batch's re-timed seconds per step: every second then comes from
one timing run, side by side, and none from a clock a busy machine moved between cells. Over
seeds: the geometric mean and a 95% Student's t interval of log time (and of steps). The best
fixed batch is the one with the lowest mean time among those whose every seed reached the target.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness import batch_plan
from harness.analysis.stats import geometric_interval


def switches_of(settings: dict) -> tuple[tuple[int, int], ...] | None:
    """A cell's batch schedule as (first step, batch) pairs, or None for a fixed batch."""
    train = settings.get("train", {})
    given = train.get("batch_schedule")
    if not given:
        return None
    return batch_plan.in_steps(given, train.get("batch_schedule_unit", "steps"))


def schedule_of(settings: dict) -> str | None:
    """A cell's batch schedule in words (`32 -> 128 at step 27`), or None for a fixed batch."""
    switches = switches_of(settings)
    return batch_plan.describe(switches) if switches else None


def retimed_to_target(cells: pd.DataFrame, retime: dict | None) -> pd.Series | None:
    """Per cell: its steps to target at each batch (a ramp's phases in turn) times that batch's
    re-timed seconds per step; None unless the retime timed every batch these cells train at."""
    per_step = {t["batch_size"]: t["seconds_per_step"] for t in (retime or {}).get("timings", [])}
    plans = {row.Index: _switches(row) for row in cells.itertuples()}
    if not per_step or not all(b in per_step for plan in plans.values() for _, b in plan):
        return None
    out = {}
    for row in cells.itertuples():
        step, plan = getattr(row, "steps_to_target", math.nan), plans[row.Index]
        ends = [s for s, _ in plan[1:]] + [math.inf]
        out[row.Index] = (sum(max(0.0, min(end, step) - start) * per_step[b] for (start, b), end in zip(plan, ends))
                          if np.isfinite(step) else math.nan)
    return pd.Series(out, dtype=float)


def _switches(row) -> tuple[tuple[int, int], ...]:
    given = getattr(row, "batch_switches", None)
    return tuple(given) if isinstance(given, (tuple, list)) and given else ((0, int(row.batch_size)),)


def clock_to_target(cells: pd.DataFrame, checks: pd.DataFrame) -> pd.Series:
    """Per cell: the training clock at its fitted steps to target, interpolated over its checks, the
    warm-up left out where the clock has passed it (checks come from one sweep: by cell id)."""
    by_cell = dict(tuple(checks.sort_values("step").groupby("cell_id"))) if not checks.empty else {}
    out = {}
    for row in cells.itertuples():
        mine, step = by_cell.get(row.cell_id), getattr(row, "steps_to_target", math.nan)
        if mine is None or not np.isfinite(step):
            out[row.Index] = math.nan
            continue
        clock = float(np.interp(step, [0.0, *mine["step"]], [0.0, *mine["train_seconds"]]))
        warm = float(row.warmup_seconds or 0.0)
        out[row.Index] = clock - warm if clock > warm else clock
    return pd.Series(out, dtype=float)


def compare(cells: pd.DataFrame, checks: pd.DataFrame, retime: dict | None = None) -> list[dict]:
    """One row per (variant, schedule): its time and steps to target over seeds against the best
    fixed batch's of the same variant, and whether it is faster outside both intervals."""
    if "batch_schedule" not in cells or cells["batch_schedule"].isna().all():
        return []
    done = cells[cells["status"] == "done"].copy()
    retimed = retimed_to_target(done, retime)
    done["clock_to_target_s"] = clock_to_target(done, checks) if retimed is None else retimed
    rows = []
    for (variant, schedule), ramp in done[done["batch_schedule"].notna()].groupby(["variant", "batch_schedule"]):
        fixed = done[done["batch_schedule"].isna()]
        if (fixed["variant"] == variant).any() or fixed["variant"].nunique() > 1:  # a ramp variant: the fixed one
            fixed = fixed[fixed["variant"] == variant]
        best = _best_fixed(fixed)
        time, time_low, time_high = geometric_interval(ramp["clock_to_target_s"])
        steps, steps_low, steps_high = geometric_interval(ramp["steps_to_target"])
        row = {"variant": variant, "schedule": schedule, "seeds": len(ramp),
               "reached": int(ramp["clock_to_target_s"].notna().sum()), "time_s": time, "time_low_s": time_low,
               "time_high_s": time_high, "steps": steps, "steps_low": steps_low, "steps_high": steps_high,
               "best_batch": None, "saving": None, "beats": False, "retimed": retimed is not None}
        if best is not None:
            batch, group = best
            b_time, b_low, b_high = geometric_interval(group["clock_to_target_s"])
            b_steps, b_steps_low, b_steps_high = geometric_interval(group["steps_to_target"])
            row |= {"best_batch": int(batch), "best_seeds": len(group), "best_time_s": b_time, "best_time_low_s": b_low,
                    "best_time_high_s": b_high, "best_steps": b_steps, "best_steps_low": b_steps_low,
                    "best_steps_high": b_steps_high}
            if time is not None and row["reached"] == len(ramp):
                row["saving"] = 1 - time / b_time
                row["beats"] = time_high is not None and b_low is not None and time_high < b_low
        rows.append(row)
    return rows


def _best_fixed(fixed: pd.DataFrame) -> tuple[int, pd.DataFrame] | None:
    """The fixed batch (at its best rate) with the lowest mean clock time, every seed at the target."""
    best = None
    for (batch, _), group in fixed.groupby(["batch_size", "learning_rate"]):
        if group["clock_to_target_s"].isna().any():
            continue
        mean = geometric_interval(group["clock_to_target_s"])[0]
        if mean is not None and (best is None or mean < best[0]):
            best = (mean, batch, group)
    return None if best is None else (best[1], best[2])
