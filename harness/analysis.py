"""From tidy frames to answers: time to target, per-batch-size aggregates, the sweet spot.

The rules (the report states them):
- accuracy(B): test accuracy at the epoch of best validation accuracy, mean over seeds.
- time to target: optimizer steps until validation accuracy first reaches the target
  (checked at epoch ends) x time per step (= B x time per image).
- sweet spot: among batch sizes whose accuracy is within `tolerance` of the best, the one
  with the shortest time to target (ties: the smaller batch).
- flat point: the smallest B that no larger B beats on time per image by more than `threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.metrics import aggregates

GROUP = ["source", "sweep", "variant", "batch_size"]
KEY = ["source", "sweep", "cell_id"]
ACCURACY = "test_accuracy_at_best_val"  # a cell's accuracy, and its mean over seeds per batch size


def add_time_to_target(cells: pd.DataFrame, epochs: pd.DataFrame, target: float) -> pd.DataFrame:
    """steps to target x time per step, and the measured training time to the same epoch
    (warm-up plus the timed windows up to it; evaluation never counts)."""
    cells = cells.copy()
    if epochs.empty:
        cells[["epochs_to_target", "steps_to_target", "time_to_target_s", "measured_time_to_target_s"]] = None
        cells["reached_target"] = 0
        return cells
    epochs = epochs.sort_values("epoch").copy()
    epochs["train_seconds_so_far"] = epochs.groupby(KEY)["train_seconds"].cumsum()
    reached = epochs[epochs["val_accuracy"] >= target]
    first = reached.groupby(KEY, as_index=False).first()
    first = first[[*KEY, "epoch", "optimizer_steps", "train_seconds_so_far"]]
    first = first.rename(columns={"epoch": "epochs_to_target", "optimizer_steps": "steps_to_target"})
    cells = cells.merge(first, on=KEY, how="left")
    cells["time_to_target_s"] = cells["steps_to_target"] * cells["batch_size"] * cells["time_per_image_s"]
    cells["measured_time_to_target_s"] = cells.pop("train_seconds_so_far") + cells["warmup_seconds"]
    cells["reached_target"] = cells["time_to_target_s"].notna().astype(int)
    return cells


def by_batch_size(cells: pd.DataFrame) -> pd.DataFrame:
    """Done cells combined over seeds as harness/metrics.py says (means over the seeds that reached
    the target; reached_target counts them)."""
    done = cells[cells["status"] == "done"]
    spec = aggregates("batch")
    if done.empty:  # nothing finished yet: the same columns, no rows
        return pd.DataFrame(columns=[*GROUP, *spec, "images_per_second"])
    table = done.groupby(GROUP, dropna=False).agg(**spec).reset_index()
    table["images_per_second"] = 1.0 / table["time_per_image_s"]
    return table.sort_values(GROUP, ignore_index=True)


@dataclass(frozen=True)
class Verdict:
    batch_size: int | None
    variant: str
    explanation: str


def sweet_spot(table: pd.DataFrame, tolerance: float, target: float) -> Verdict:
    if table.empty:
        return Verdict(None, "", "no cell finished, so there is no sweet spot")
    best = table[ACCURACY].max()
    near = table[table[ACCURACY] >= best - tolerance - 1e-12]
    # every seed must have reached the target, else the mean time hides the misses
    timed = near[near["reached_target"] == near["n"]].dropna(subset=["time_to_target_s"])
    if timed.empty:
        return Verdict(
            None, "",
            f"no batch size within {tolerance:.3f} of the best accuracy ({best:.4f}) reached the "
            f"target validation accuracy {target:.3f} in every seed; train longer or lower the target",
        )
    pick = timed.sort_values(["time_to_target_s", "batch_size"]).iloc[0]
    return Verdict(
        int(pick["batch_size"]), pick["variant"],
        f"It reaches {target:.3f} validation accuracy in "
        f"{pick['time_to_target_s']:.2f} s of training, the fastest of the {len(near)} batch size(s) "
        f"whose test accuracy ({pick[ACCURACY]:.4f}) is within {tolerance:.3f} of the best ({best:.4f})",
    )


def rules_disagree(verdict: Verdict, flat: int | None) -> str | None:
    """Why the two rules name different batch sizes, in one sentence (None when they agree)."""
    if verdict.batch_size is None or flat is None or verdict.batch_size == flat:
        return None
    if flat > verdict.batch_size:
        return (f"The rules disagree: batch {flat} still trains faster per image, but batch {verdict.batch_size} "
                f"reaches the target sooner, because larger batches need more images (epochs) to get there.")
    return (f"The rules disagree: time per image stops improving at batch {flat}, but batch {verdict.batch_size} "
            f"reaches the target sooner, because it needs fewer steps to get there at nearly the same speed per image.")


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
