"""Did training collapse, and why? From the results frames to a verdict written from the numbers.

A cell collapsed when its test accuracy fell more than `drop` from its peak by the last epoch, or
when it diverged (non-finite loss). Each offered explanation has a signature in the diagnostics
(harness/training/diagnostics.py), and one switch in an ablation sweep (configs/seed_ablation.yaml):
- overfitting: train accuracy stays high while held-out accuracy falls;
- numerical instability: huge single-step updates, tiny Adam sqrt(v); fixed by eps or clipping;
- dead or saturated units: the dead fraction of a hidden layer rises; fixed by softplus;
- data order: fixed by sampling with replacement instead of reshuffled passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis.per_batch import KEY
from harness.record.metrics import HIDDEN_LAYERS, LINEAR_LAYERS, aggregates

BASELINE = "baseline"  # the ablation variant that changes nothing
# what a switch tests, by the setting it changes
EXPLANATION = {
    "optim.eps": "numerical instability (Adam's tiny second moments)",
    "optim.grad_clip_norm": "numerical instability (huge gradients)",
    "optim.lr": "a step size too large",
    "model.activation": "dead or saturated units",
    "model.init": "the N(0, 1) initialisation",
    "train.sampling": "data order",
    "train.batch_size": "the gradient noise of a tiny batch",
}


@dataclass(frozen=True)
class Collapse:
    cell_id: str
    variant: str
    peak_epoch: int
    last_epoch: int
    status: str
    at_peak: dict  # the epoch row at peak test accuracy
    at_end: dict  # the last epoch row
    worst: dict  # each column's largest value from the peak epoch to the last


def per_cell(cells: pd.DataFrame, epochs: pd.DataFrame, drop: float) -> pd.DataFrame:
    """One row per finished cell (done or diverged): peak and final accuracies, and collapsed.
    A cell that diverged before its first epoch ended has no accuracies, and collapsed."""
    finished = cells[cells["status"].isin(["done", "diverged"])]
    columns = [*KEY, "variant", "batch_size", "seed", "status", "peak_epoch", "peak_test_accuracy",
               "final_test_accuracy", "drop", "deepest_dip", "collapsed"]
    if finished.empty:
        return pd.DataFrame(columns=columns)
    table = finished[[*KEY, "variant", "batch_size", "seed", "status"]]
    if not epochs.empty:
        rows = epochs.merge(finished[KEY], on=KEY).sort_values("epoch")
        peaks = rows.loc[rows.groupby(KEY)["test_accuracy"].idxmax(), [*KEY, "epoch", "test_accuracy"]]
        last = rows.groupby(KEY, as_index=False).last()[[*KEY, "test_accuracy"]]
        # a dip that recovered by the last epoch is not a collapse, but the table shows it
        rows["dip"] = rows.groupby(KEY)["test_accuracy"].cummax() - rows["test_accuracy"]
        dips = rows.groupby(KEY, as_index=False)["dip"].max().rename(columns={"dip": "deepest_dip"})
        table = table.merge(peaks.merge(last, on=KEY, suffixes=("_peak", "_final")).merge(dips, on=KEY), on=KEY,
                            how="left")
    table = table.rename(columns={"epoch": "peak_epoch", "test_accuracy_peak": "peak_test_accuracy",
                                  "test_accuracy_final": "final_test_accuracy"}).reindex(columns=columns)
    table["drop"] = table["peak_test_accuracy"] - table["final_test_accuracy"]
    table["collapsed"] = (table["drop"] > drop) | (table["status"] == "diverged")
    return table.sort_values(["variant", "batch_size", "seed"], ignore_index=True)


def variant_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant: seeds run, seeds collapsed, and the mean peak and final test accuracy."""
    spec = aggregates("variants")
    if table.empty:
        return pd.DataFrame(columns=["variant", *spec, "collapse_rate"])
    out = table.groupby("variant", as_index=False).agg(**spec)
    out["collapse_rate"] = out["collapsed"] / out["n"]
    return out


def collapses(table: pd.DataFrame, epochs: pd.DataFrame) -> list[Collapse]:
    found = []
    for row in table[table["collapsed"] & table["peak_epoch"].notna()].itertuples(index=False):
        cell = epochs[epochs["cell_id"] == row.cell_id].sort_values("epoch")
        at_peak = cell[cell["epoch"] == row.peak_epoch].iloc[0].to_dict()
        worst = cell[cell["epoch"] >= row.peak_epoch].max(numeric_only=True).to_dict()
        found.append(Collapse(cell_id=row.cell_id, variant=row.variant, peak_epoch=int(row.peak_epoch),
                              last_epoch=int(cell["epoch"].iloc[-1]),
                              status=row.status, at_peak=at_peak, at_end=cell.iloc[-1].to_dict(), worst=worst))
    return found


def _layers(row: dict, prefix: str, layers) -> list[float]:
    """The recorded (not null, not NaN) values of a per-layer column family in one epoch row."""
    return [v for i in layers if (v := row.get(f"{prefix}_l{i}")) is not None and v == v]


def _max(row: dict, prefix: str, layers) -> float | None:
    return max(values) if (values := _layers(row, prefix, layers)) else None


def _mean(row: dict, prefix: str, layers) -> float | None:
    return sum(values) / len(values) if (values := _layers(row, prefix, layers)) else None


def evidence(found: list[Collapse]) -> list[str]:
    """Sentences on the diagnostics at the peak vs the last epoch, averaged over collapsed cells."""
    if not found:
        return []
    n = len(found)

    def avg(get) -> tuple[float | None, float | None]:
        pairs = [(get(c.at_peak), get(c.at_end)) for c in found]
        pairs = [p for p in pairs if None not in p and p[0] == p[0] and p[1] == p[1]]
        return (sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)) if pairs else (None, None)

    out = []
    train = avg(lambda r: r.get("train_accuracy"))
    test = avg(lambda r: r.get("test_accuracy"))
    if train[0] is not None:
        if train[0] - train[1] > (test[0] - test[1]) / 2:
            out.append(f"Train accuracy fell with held-out accuracy (train {train[0]:.3f} -> {train[1]:.3f}, "
                       f"test {test[0]:.3f} -> {test[1]:.3f}, mean of {n} collapsed cell(s) from peak to last epoch): "
                       f"not overfitting, which keeps train accuracy high while held-out accuracy falls.")
        else:
            out.append(f"Train accuracy held ({train[0]:.3f} -> {train[1]:.3f}) while test accuracy fell "
                       f"({test[0]:.3f} -> {test[1]:.3f}): the signature of overfitting.")
    dead = avg(lambda r: _max(r, "dead_fraction", HIDDEN_LAYERS))
    if dead[0] is not None:
        moved = "rose to" if dead[1] > dead[0] + 0.02 else "stayed near"
        out.append(f"The most-dead hidden layer {moved} {dead[1]:.0%} dead units (from {dead[0]:.0%} at the peak).")
    else:
        out.append("Dead units: not available for this model (it has no nn.ReLU or nn.Softplus modules to watch).")
    update = avg(lambda r: _max(r, "update_ratio_max", LINEAR_LAYERS))
    if update[0] is not None:
        worst = max(v for c in found if (v := _max(c.worst, "update_ratio_max", LINEAR_LAYERS)) is not None)
        reading = ("no sign of a numerical blow-up" if worst < 0.01 else
                   "large steps: a sign of numerical instability" if worst > 0.1 else "moderate steps")
        out.append(f"The largest single-step update was {update[0]:.2g} of a layer's weights in the peak epoch, "
                   f"{update[1]:.2g} in the last and at most {worst:.2g} in between: {reading}.")
    sqrt_v = avg(lambda r: _mean(r, "adam_sqrt_v_median", LINEAR_LAYERS))
    if sqrt_v[0] is not None:
        out.append(f"Adam's median sqrt(v) (mean over layers) went from {sqrt_v[0]:.2g} to {sqrt_v[1]:.2g}.")
    saturated = avg(lambda r: r.get("softmax_saturated_fraction"))
    if saturated[0] is not None:
        out.append(f"Saturated softmax outputs (top probability exactly 1 in float32): {saturated[0]:.0%} of the "
                   f"probe at the peak, {saturated[1]:.0%} at the end.")
    else:
        out.append("Softmax saturation: not available for this model (its outputs are not class logits).")
    return out


def switches(plan_config: dict | None) -> dict[str, dict]:
    """variant name -> the settings it changes, from the sweep's plan.json."""
    return dict((plan_config or {}).get("variants") or {})


def verdict(table: pd.DataFrame, by_variant: pd.DataFrame, changed: dict[str, dict], drop: float) -> str:
    """One paragraph from the numbers: how many collapsed, and which single switch prevents it."""
    if table.empty:
        return "No finished cell to judge."
    collapsed = int(table["collapsed"].sum())
    if not collapsed:
        return (f"No cell collapsed: none lost more than {drop} test accuracy from its peak or diverged "
                f"({len(table)} cells).")
    head = (f"{collapsed} of {len(table)} cells collapsed (lost more than {drop} test accuracy from the peak, or "
            f"diverged).")
    base = by_variant[by_variant["variant"] == BASELINE]
    if base.empty or len(by_variant) < 2:
        return head + " There is no ablation sweep here (variants with a 'baseline'): run configs/seed_ablation.yaml " \
                      "to learn which single switch prevents it."
    b = base.iloc[0]
    if not b["collapsed"]:
        return head + f" The baseline itself did not collapse (0 of {int(b['n'])} seeds), so the ablation cannot " \
                      "say which switch prevents it."
    lines, cures, dipped = [], [], []
    for r in by_variant[by_variant["variant"] != BASELINE].sort_values(["collapse_rate", "variant"]).itertuples():
        what = ", ".join(f"{k}={v}" for k, v in changed.get(r.variant, {}).items()) or r.variant
        cause = "; ".join(EXPLANATION.get(k, k) for k in changed.get(r.variant, {}))
        named = f"{r.variant} ({what}: {cause})" if cause else f"{r.variant} ({what})"
        if r.collapsed == 0 and not r.deepest_dip > drop:
            cures.append(named)
            tail = "prevents it"
        elif r.collapsed == 0:  # no lasting collapse, but it fell and came back
            dipped.append(named)
            tail = f"no lasting collapse, but a dip of {r.deepest_dip:.2f} on average"
        elif r.collapse_rate < b["collapse_rate"]:
            tail = "reduces it"
        else:
            tail = "does not prevent it"
        lines.append(f"{r.variant} {int(r.collapsed)}/{int(r.n)} ({tail})")
    answer = (f"Switches that prevented it in every seed: {'; '.join(cures)}." if cures
              else "No single switch prevented it in every seed.")
    if dipped:
        answer += f" Recovered after a dip (the collapse started, then reversed): {'; '.join(dipped)}."
    return (f"{head} The baseline collapsed in {int(b['collapsed'])} of {int(b['n'])} seeds; with one switch each: "
            f"{', '.join(lines)}. {answer}")
