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

GROUP = ["source", "sweep", "variant", "batch_size"]


def add_time_to_target(cells: pd.DataFrame, epochs: pd.DataFrame, target: float) -> pd.DataFrame:
    cells = cells.copy()
    if epochs.empty:
        cells[["epochs_to_target", "steps_to_target", "time_to_target_s"]] = None
        return cells
    reached = epochs[epochs["val_accuracy"] >= target].sort_values("epoch")
    first = reached.groupby(["source", "sweep", "cell_id"], as_index=False).first()
    first = first[["source", "sweep", "cell_id", "epoch", "optimizer_steps"]]
    first = first.rename(columns={"epoch": "epochs_to_target", "optimizer_steps": "steps_to_target"})
    cells = cells.merge(first, on=["source", "sweep", "cell_id"], how="left")
    cells["time_to_target_s"] = cells["steps_to_target"] * cells["batch_size"] * cells["time_per_image_s"]
    return cells


def by_batch_size(cells: pd.DataFrame) -> pd.DataFrame:
    """Done cells aggregated over seeds: mean, standard deviation, and n."""
    done = cells[cells["status"] == "done"]
    if done.empty:
        return pd.DataFrame(columns=GROUP)
    grouped = done.groupby(GROUP, dropna=False)
    table = grouped.agg(
        n=("cell_id", "size"),
        accuracy=("test_accuracy_at_best_val", "mean"),
        accuracy_std=("test_accuracy_at_best_val", "std"),
        time_per_image_s=("time_per_image_s", "mean"),
        time_per_image_std=("time_per_image_s", "std"),
        n_reached=("time_to_target_s", "count"),
        # mean over the seeds that reached the target; n_reached says how many did
        time_to_target_s=("time_to_target_s", "mean"),
        peak_allocated_bytes=("peak_allocated_bytes", "max"),
        peak_rss_bytes=("peak_rss_bytes", "max"),
    ).reset_index()
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
    best = table["accuracy"].max()
    near = table[table["accuracy"] >= best - tolerance - 1e-12]
    # every seed must have reached the target, else the mean time hides the misses
    timed = near[near["n_reached"] == near["n"]].dropna(subset=["time_to_target_s"])
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
        f"whose test accuracy ({pick['accuracy']:.4f}) is within {tolerance:.3f} of the best ({best:.4f})",
    )


def flat_point(table: pd.DataFrame, threshold: float) -> int | None:
    """Smallest B such that no larger B is more than `threshold` faster per image."""
    rows = table.dropna(subset=["time_per_image_s"]).sort_values("batch_size")
    times = rows["time_per_image_s"].tolist()
    for i, (batch, t) in enumerate(zip(rows["batch_size"], times)):
        if all(later >= t * (1 - threshold) for later in times[i + 1 :]):
            return int(batch)
    return None
