"""Cells with a train.batch_schedule (a batch-size ramp) beside the grid's fixed batch sizes.

A ramp has no one batch size, so it stays out of the per-batch analysis and is compared whole: its
time to target is its training clock at the fitted crossing of the target (interpolated between
the checks around it, the untimed warm-up left out), and so, for this comparison, is every fixed
cell's: both sides measured the same way. Over seeds: the geometric mean and a 95% Student's t
interval of log time (and of steps). The best fixed batch is the one with the lowest mean time
among those whose every seed reached the target.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness import batch_plan
from harness.analysis.stats import geometric_interval


def schedule_of(settings: dict) -> str | None:
    """A cell's batch schedule in words (`32 -> 128 at step 27`), or None for a fixed batch."""
    train = settings.get("train", {})
    given = train.get("batch_schedule")
    if not given:
        return None
    return batch_plan.describe(batch_plan.in_steps(given, train.get("batch_schedule_unit", "steps")))


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


def compare(cells: pd.DataFrame, checks: pd.DataFrame) -> list[dict]:
    """One row per (variant, schedule): its time and steps to target over seeds against the best
    fixed batch's of the same variant, and whether it is faster outside both intervals."""
    if "batch_schedule" not in cells or cells["batch_schedule"].isna().all():
        return []
    done = cells[cells["status"] == "done"].copy()
    done["clock_to_target_s"] = clock_to_target(done, checks)
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
               "best_batch": None, "saving": None, "beats": False}
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
