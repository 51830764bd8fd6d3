"""From tidy frames to numbers: time to target per cell, the learning rate per batch size, the
per-batch table, the flat point. harness/analysis/recommend.py turns them into the report's verdicts.

The rules (the report states them):
- accuracy(B): test accuracy at the epoch of best validation accuracy, mean over seeds.
- steps to target: where a line of validation accuracy against log steps, fitted to the checks
  around the crossing, reaches the target (analysis/crossing.py; evals.csv). Its resolution is the
  gap between the two checks around it; its standard error, from the checks' scatter about the
  line, is what one run's noisy checks leave uncertain. The first check at or above the target, which moves with
  the check schedule, is kept beside it (steps_to_target_first_check). Results without checks are
  read at the first epoch end at or above the target.
- time to target: steps to target x time per step (= B x time per image); "measured" is the
  training clock at that check (warm-up included, evaluation never).
- learning rate: where a batch size was trained at several rates, the one with the shortest time
  to target among rates within `tolerance` of that batch size's best accuracy whose seeds all
  reached the target; every per-batch number is then read at that rate.
- flat point: the smallest B that no larger B beats on time per image by more than `threshold`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.collect import Collected, oriented, quality_of
from harness.analysis.crossing import crossing
from harness.analysis.stats import near_best
from harness.config import ReportSettings
from harness.record.metrics import aggregates

GROUP = ["source", "sweep", "variant", "batch_size"]
KEY = ["source", "sweep", "cell_id"]
ACCURACY = "test_accuracy_at_best_val"  # a cell's accuracy, and its mean over seeds per batch size
TARGET_COLUMNS = ["steps_to_target", "steps_before_target", "steps_after_target", "target_resolution_steps",
                  "steps_to_target_se", "target_read_at", "measured_time_to_target_s", "steps_to_target_first_check"]


def readings(checks: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy over training per cell, at the finest resolution recorded: the checks
    where a cell has them (evals.csv), else its epoch ends. Columns: KEY, step, train_seconds
    (training so far: warm-up included for checks; timed windows only at epoch ends), val_accuracy,
    read_at."""
    frames = []
    if not checks.empty:
        frames.append(checks[[*KEY, "step", "train_seconds", "val_accuracy"]].assign(read_at="check"))
    if not epochs.empty:
        rows = _without_checks(epochs, checks).sort_values("epoch")
        rows = rows.assign(train_seconds=rows.groupby(KEY)["train_seconds"].cumsum(), read_at="epoch")
        frames.append(rows.rename(columns={"optimizer_steps": "step"})[[*KEY, "step", "train_seconds", "val_accuracy",
                                                                        "read_at"]])
    if not frames:
        return pd.DataFrame(columns=[*KEY, "step", "train_seconds", "val_accuracy", "read_at"])
    return pd.concat(frames, ignore_index=True).sort_values([*KEY, "step"], ignore_index=True)


def _without_checks(epochs: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """The epoch rows of cells that recorded no checks (results without evals.csv)."""
    have = set(map(tuple, checks[KEY].drop_duplicates().values)) if not checks.empty else set()
    return epochs[[tuple(k) not in have for k in epochs[KEY].values]]


def add_time_to_target(cells: pd.DataFrame, checks: pd.DataFrame, epochs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per cell: steps to target (the fitted crossing) with the checks around it, the first check at
    or above the target, time to target, measured time to target (the training clock at the check
    after the crossing)."""
    cells = cells.drop(columns=[c for c in TARGET_COLUMNS if c in cells], errors="ignore")
    rows = []
    for key, group in readings(checks, epochs).groupby(KEY, sort=False):
        # epoch ends are too far apart to fit a line through: there, the first epoch at the target
        fit = (group["read_at"] == "check").all()
        found = crossing(group["step"].to_numpy(float), group["val_accuracy"].to_numpy(float), target, fit)
        if found is None:
            continue
        after = group[group["step"] == found.after].iloc[0]
        rows.append(dict(zip(KEY, key)) | {
            "steps_to_target": found.steps, "steps_before_target": found.before, "steps_after_target": found.after,
            "target_resolution_steps": found.after - found.before,
            "steps_to_target_se": found.steps * found.log_se if found.log_se is not None else np.nan,
            "target_read_at": after["read_at"],
            "measured_time_to_target_s": after["train_seconds"], "steps_to_target_first_check": found.first_check})
    cells = cells.merge(pd.DataFrame(rows, columns=[*KEY, *TARGET_COLUMNS]), on=KEY, how="left")
    cells["time_to_target_s"] = cells["steps_to_target"] * cells["batch_size"] * cells["time_per_image_s"]
    from_epochs = cells["target_read_at"] == "epoch"  # epoch ends count timed windows only: add the warm-up
    cells["measured_time_to_target_s"] = (cells["measured_time_to_target_s"].astype(float)
                                          + cells["warmup_seconds"].astype(float).where(from_epochs, 0.0))
    cells["reached_target"] = cells["time_to_target_s"].notna().astype(int)
    return cells


def timing_windows(checks: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell, its timed windows as (steps, seconds): one per stretch between checks, or per epoch
    for cells without checks. The spread of seconds per step across them is the timing noise."""
    frames = []
    if not checks.empty:
        frames.append(checks[[*KEY, "window_steps", "window_seconds"]])
    if not epochs.empty:
        rows = _without_checks(epochs, checks)
        frames.append(rows[[*KEY, "timed_steps", "train_seconds"]].set_axis([*KEY, "window_steps", "window_seconds"],
                                                                              axis=1))
    if not frames:
        return pd.DataFrame(columns=[*KEY, "window_steps", "window_seconds"])
    windows = pd.concat(frames, ignore_index=True)
    return windows[(windows["window_steps"] > 0) & windows["window_seconds"].notna()]


def retimed(cells: pd.DataFrame, windows: pd.DataFrame, retime: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """With a retime.json (`harness retime`): each done cell of a re-timed batch size takes its
    seconds per step from there (time per image, and the windows the intervals read), its steps
    from its own run; whether its time was disturbed is then the re-timing's."""
    if not retime or cells.empty:
        return cells.assign(retimed=False), windows
    per_step = {t["batch_size"]: t for t in retime["timings"]}
    cells = cells.copy()
    fixed = cells["batch_schedule"].isna() if "batch_schedule" in cells else True  # a ramp: analysis/schedules.py
    hit = (cells["status"] == "done") & cells["batch_size"].isin(list(per_step)) & fixed
    cells["retimed"] = hit
    if not hit.any():  # only ramps (analysis/schedules.py reads the retime for them)
        return cells, windows
    timing = [per_step[int(b)] for b in cells.loc[hit, "batch_size"]]
    cells.loc[hit, "time_per_image_s"] = [t["seconds_per_step"] / t["batch_size"] for t in timing]
    cells.loc[hit, "timing_disturbed"] = [bool(t.get("timing_disturbed_reason")) for t in timing]
    cells.loc[hit, "timing_disturbed_reason"] = [t.get("timing_disturbed_reason") for t in timing]
    keys = set(map(tuple, cells.loc[hit, KEY].itertuples(index=False, name=None)))
    kept = windows[[k not in keys for k in windows[KEY].itertuples(index=False, name=None)]]
    new = [{**dict(zip(KEY, key)), "window_steps": 1.0, "window_seconds": rate}
           for key, t in zip(cells.loc[hit, KEY].itertuples(index=False, name=None), timing)
           for rate in t["window_seconds_per_step"]]
    return cells, pd.concat([kept, pd.DataFrame(new, columns=[*KEY, "window_steps", "window_seconds"])],
                            ignore_index=True)


def by_rate(cells: pd.DataFrame) -> pd.DataFrame:
    """Done cells combined over seeds per batch size AND learning rate (harness/record/metrics.py says how)."""
    done = cells[cells["status"] == "done"]
    spec = aggregates("batch")
    columns = [*GROUP, "learning_rate", *spec, "images_per_second"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    table = done.groupby([*GROUP, "learning_rate"], dropna=False).agg(**spec).reset_index()
    table["images_per_second"] = 1.0 / table["time_per_image_s"]
    return table


def pick_rates(table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per batch size: the learning rate it is compared at, with `rates_tried`, `lr_edge`
    (lowest / highest when the pick is at the edge of several rates tried) and `lr_tied` (rates
    with the same time to target)."""
    if table.empty:
        return table.assign(rates_tried=[], lr_edge=[], lr_tied=[])
    rows = []
    for _, group in table.groupby(GROUP, dropna=False, sort=True):
        rows.append(_pick(group, tolerance))
    return pd.DataFrame(rows).reset_index(drop=True)


def _pick(group: pd.DataFrame, tolerance: float) -> pd.Series:
    near = group[near_best(group[ACCURACY], group[ACCURACY].max(), tolerance)]
    reached = near[near["reached_target"] == near["n"]].dropna(subset=["time_to_target_s"])
    if reached.empty:  # no rate reached the target here: compare at the most accurate one
        pick = group.sort_values([ACCURACY, "learning_rate"], ascending=[False, True]).iloc[0]
        tied = []
    else:
        # shortest time; among equal times the more accurate, then the smaller rate
        ordered = reached.sort_values(["time_to_target_s", ACCURACY, "learning_rate"], ascending=[True, False, True])
        pick = ordered.iloc[0]
        tied = ordered.loc[ordered["time_to_target_s"] == pick["time_to_target_s"], "learning_rate"].tolist()[1:]
    rates = sorted(group["learning_rate"].dropna().unique())
    edge = None
    if len(rates) > 1 and not reached.empty:
        rate = pick["learning_rate"]
        edge = "lowest" if rate == rates[0] else "highest" if rate == rates[-1] else None
    return pd.concat([pick, pd.Series({"rates_tried": len(rates), "lr_edge": edge, "lr_tied": tied})])


def by_batch_size(cells: pd.DataFrame, tolerance: float = 0.005) -> pd.DataFrame:
    """Per batch size, at the learning rate picked for it (the only rate, where one was tried)."""
    return pick_rates(by_rate(cells), tolerance).sort_values(GROUP, ignore_index=True) if len(cells) else by_rate(cells)


def tuned_cells(cells: pd.DataFrame, per_batch: pd.DataFrame) -> pd.DataFrame:
    """The done cells at the learning rate picked for their batch size."""
    if per_batch.empty:
        return cells.iloc[0:0]
    chosen = per_batch[[*GROUP, "learning_rate"]]
    return cells[cells["status"] == "done"].merge(chosen, on=[*GROUP, "learning_rate"])


def scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and efficiency vs processes, per batch size, where several process counts exist."""
    if table.empty or table["num_processes"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for (variant, batch), group in table.groupby(["variant", "batch_size"]):
        base = group[group["num_processes"] == group["num_processes"].min()].iloc[0]
        for _, row in group.iterrows():
            speedup = base["time_per_image_s"] / row["time_per_image_s"]
            rows.append({"variant": variant, "batch_size": batch, "source": row["source"],
                         "num_processes": row["num_processes"], "speedup": speedup,
                         "efficiency": speedup * base["num_processes"] / row["num_processes"]})
    return pd.DataFrame(rows)


def memory_limit(cells: pd.DataFrame) -> str | None:
    """Where cells ran out of memory: the largest batch below the smallest that did not fit."""
    ooms = cells.loc[cells["status"] == "oom", "batch_size"]
    if ooms.empty:
        return None
    fit = cells.loc[(cells["status"] == "done") & (cells["batch_size"] < ooms.min()), "batch_size"]
    found = f"Largest batch size that fit: {int(fit.max())}" if len(fit) else "No batch size fit"
    return f"{found}; batch size {int(ooms.min())} ran out of memory."


def flat_point(table: pd.DataFrame, threshold: float) -> int | None:
    """Smallest B such that no larger B is more than `threshold` faster per image."""
    rows = table.dropna(subset=["time_per_image_s"]).sort_values("batch_size")
    times = rows["time_per_image_s"].tolist()
    for i, (batch, t) in enumerate(zip(rows["batch_size"], times)):
        if all(later >= t * (1 - threshold) for later in times[i + 1 :]):
            return int(batch)
    return None


def against_prediction(doc: dict, per_batch: pd.DataFrame) -> pd.DataFrame:
    """predict.json's steps and time to target per batch size beside the measured ones: the grid's
    fitted crossing (the prediction is of the crossing itself)."""
    rows = pd.DataFrame(doc["fit"]["predictions"]) if doc.get("fit") else pd.DataFrame(columns=["batch_size"])
    if rows.empty:
        return rows
    rows["predicted_steps"] = rows.pop("steps_to_target")
    rows["predicted_time_s"] = rows.pop("time_to_target_s")
    # the interval for the mean of the grid's seeds (predict.json before schema 2: for the truth)
    grid_interval = rows["steps_grid_interval"] if "steps_grid_interval" in rows else rows["steps_interval"]
    rows[["predicted_steps_low", "predicted_steps_high"]] = [list(v) if v else [np.nan] * 2 for v in grid_interval]
    rows[["predicted_time_low_s", "predicted_time_high_s"]] = [list(v) if v else [np.nan] * 2
                                                               for v in rows.pop("time_interval_s")]
    measured = per_batch[["batch_size", "steps_to_target", "target_resolution_steps", "time_to_target_s",
                          "time_per_image_s", "reached_target", "n"]]
    rows = rows.merge(measured, on="batch_size", how="left")
    measured_steps = rows["steps_to_target"]
    all_reached = rows["reached_target"] == rows["n"]
    rows["measured_crossing_steps"] = measured_steps.where(all_reached)
    measured_time = measured_steps * rows["batch_size"] * rows["time_per_image_s"]
    rows["measured_crossing_time_s"] = measured_time.where(all_reached)
    rows["time_error"] = rows["predicted_time_s"] / rows["measured_crossing_time_s"] - 1
    inside = (rows["predicted_steps_low"] <= measured_steps) & (measured_steps <= rows["predicted_steps_high"])
    rows["steps_inside"] = inside.where(all_reached & rows["predicted_steps_low"].notna())
    return rows


def picked_rates(found: Collected, rules: ReportSettings) -> dict[int, float]:
    """The learning rate picked per batch size (the rule of `pick_rates`) from the done cells of a
    folder, for batch sizes that reached the target; `harness predict` predicts at these rates."""
    if found.cells.empty:
        return {}
    quality = quality_of(found.records)
    cells, checks, epochs = (oriented(f, quality) for f in (found.cells, found.checks, found.epochs))
    cells = add_time_to_target(cells, checks, epochs, quality.oriented(rules.target_accuracy))
    picked = by_batch_size(cells, rules.tolerance)
    reached = picked[picked["reached_target"] > 0]
    return {int(r.batch_size): float(r.learning_rate) for r in reached.itertuples()}
