"""Every number the harness records or derives, in one place: plain data, no torch, no pandas.

One entry per number says where it lives, its unit, how ranks and seeds combine it and how the
report shows it. The CSV columns (results), the summary keys `collect` guarantees, the per-batch
aggregates (analysis), the rank reductions (measure.over_ranks) and the report's tables are all
read from here. To add a per-cell number that the report shows: add a Metric here and compute it
(harness/summary.py for a cell's summary, train.epoch_row for an epoch row).

level:  epoch   a column of epochs.csv, one row per epoch
        check   a column of evals.csv, one row per validation check within the training
        cell    a key of result.json's summary, one per cell
        derived computed by the analysis from the recorded numbers, never stored by the trainer
        label   an identity column of the tidy frame (cell id, batch size, ...), not a measurement
ranks:  how P processes' values become one: max (the slowest rank's time, the worst memory), sum
        (energy, power), mean, or same (identical on every rank: computed from reduced values)
seeds:  how the cells of one batch size combine in the per-batch table, in order; the first op
        names the column after the key, the others `<key>_<op>` (e.g. time_per_image_s_std)
tables: the report tables that show it: cells, batch, compare, collapse, variants
fmt:    a format spec, or one of the units below: bytes (MiB), us (microseconds), pct
"""

from __future__ import annotations

from dataclasses import dataclass

# 784-500-500-500-10: four linear layers, three hidden ones (diagnostics are per layer, from 1)
LINEAR_LAYERS, HIDDEN_LAYERS = range(1, 5), range(1, 4)


@dataclass(frozen=True)
class Metric:
    key: str
    level: str
    unit: str = ""
    header: str | None = None
    fmt: str = ".4g"
    ranks: str = "same"
    seeds: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    integer: bool = False  # a count: stored and checked as a whole number


def _per_layer(prefix: str, layers: range, unit: str) -> list[Metric]:
    return [Metric(f"{prefix}_l{i}", "epoch", unit) for i in layers]


# why training went wrong (training/diagnostics.py), per epoch; per-step norms only with
# train.step_diagnostics (unknown otherwise), the rest always
STEP_NORMS: tuple[Metric, ...] = (
    *_per_layer("grad_norm_mean", LINEAR_LAYERS, ""),
    *_per_layer("grad_norm_max", LINEAR_LAYERS, ""),
    *_per_layer("update_ratio_max", LINEAR_LAYERS, "1"),
)
STEP_NORM_COLUMNS = tuple(m.key for m in STEP_NORMS)
DIAGNOSTICS: tuple[Metric, ...] = (
    *STEP_NORMS,
    *_per_layer("dead_fraction", HIDDEN_LAYERS, "1"),
    Metric("max_abs_logit", "epoch"),
    Metric("softmax_saturated_fraction", "epoch", "1"),
    *_per_layer("adam_sqrt_v_min", LINEAR_LAYERS, ""),
    *_per_layer("adam_sqrt_v_median", LINEAR_LAYERS, ""),
    Metric("noise_scale", "epoch", "images"),
)
DIAGNOSTIC_COLUMNS = tuple(m.key for m in DIAGNOSTICS)

ACC = ".4f"
CELLS, BATCH, COMPARE = ("cells",), ("batch",), ("compare",)

METRICS: tuple[Metric, ...] = (
    # identity of a cell in the tidy frame (collect.cell_row); shown first in the tables
    Metric("cell_id", "label", header="cell", fmt="s", tables=("cells", "collapse")),
    Metric("status", "label", header="status", fmt="s", tables=("cells", "collapse")),
    Metric("variant", "label", header="other settings", fmt="s", tables=("batch", "variants", "rates", "cells")),
    Metric("batch_size", "label", "images", "batch", "d",
           tables=("cells", "batch", "compare", "collapse", "rates", "prediction")),
    Metric("source", "label", header="results folder", fmt="s", tables=COMPARE),
    Metric("seed", "label", header="seed", fmt="d", tables=("cells", "collapse")),
    Metric("num_processes", "label", header="processes", fmt="d", seeds=("first",), tables=COMPARE, integer=True),

    # per epoch (epochs.csv)
    Metric("epoch", "epoch", integer=True),
    Metric("train_loss", "epoch", ranks="mean"),
    # accuracies: each rank scores its slice, the correct counts are summed (train.evaluate)
    Metric("train_accuracy", "epoch"),
    Metric("val_accuracy", "epoch"),
    Metric("test_accuracy", "epoch"),
    Metric("images_seen", "epoch", "images", integer=True),
    Metric("optimizer_steps", "epoch", "steps", integer=True),
    Metric("timed_steps", "epoch", "steps", integer=True),
    Metric("train_seconds", "epoch", "s", ranks="max"),
    Metric("time_per_image_s", "epoch", "s"),
    Metric("eval_seconds", "epoch", "s", ranks="max"),
    Metric("energy_j", "epoch", "J", ranks="sum"),
    Metric("peak_allocated_bytes", "epoch", "bytes", ranks="max", integer=True),
    Metric("peak_reserved_bytes", "epoch", "bytes", ranks="max", integer=True),
    Metric("peak_rss_bytes", "epoch", "bytes", ranks="max", integer=True),
    Metric("diagnostics_seconds", "epoch", "s", ranks="max"),
    *DIAGNOSTICS,

    # per validation check within training (evals.csv; harness/checks.py says when)
    Metric("step", "check", "steps", integer=True),
    Metric("epoch", "check", integer=True),
    Metric("images_seen", "check", "images", integer=True),
    Metric("train_seconds", "check", "s"),  # training so far, warm-up included: sum of the windows
    Metric("window_steps", "check", "steps", integer=True),  # timed steps since the previous check
    Metric("window_seconds", "check", "s", ranks="max"),  # their seconds: one sample of time per step
    Metric("window_warmup_steps", "check", "steps", integer=True),
    Metric("window_warmup_seconds", "check", "s", ranks="max"),
    Metric("val_accuracy", "check"),
    Metric("val_loss", "check"),
    Metric("check_seconds", "check", "s", ranks="max"),  # the check's own clock, never training time

    # per cell (result.json summary; harness/summary.py)
    Metric("epochs_completed", "cell", "epochs", "epochs", "d", tables=CELLS, integer=True),
    Metric("steps_per_epoch", "cell", "steps", integer=True),
    Metric("local_batch_size", "cell", "images", integer=True),
    Metric("learning_rate", "cell", "", "learning rate", ".3g", tables=("cells", "batch", "rates")),  # a group key
    Metric("optimizer_steps", "cell", "steps", integer=True),
    Metric("images_seen", "cell", "images", integer=True),
    Metric("best_epoch", "cell", "epochs", "best epoch", "d", tables=CELLS, integer=True),
    Metric("best_val_accuracy", "cell", "", "best val acc", ACC, seeds=("mean",), tables=CELLS),
    Metric("test_accuracy_at_best_val", "cell", "", "test acc @ best val", ACC, seeds=("mean", "std"),
           tables=("cells", "batch", "compare", "rates")),
    Metric("train_loss_at_best_val", "cell", "", "train loss @ best val", ".4f", seeds=("mean",), tables=CELLS),
    Metric("final_val_accuracy", "cell"),
    Metric("final_test_accuracy", "cell", "", "final test acc", ACC, tables=CELLS),
    Metric("final_train_loss", "cell"),
    Metric("warmup_steps", "cell", "steps", "warm-up steps", "d", tables=CELLS, integer=True),
    Metric("warmup_seconds", "cell", "s"),
    Metric("first_step_losses", "cell", "list"),
    Metric("train_seconds", "cell", "s"),
    Metric("timed_images", "cell", "images", integer=True),
    Metric("time_per_image_s", "cell", "s", "time/image", "us", seeds=("mean", "std"),
           tables=("cells", "batch", "compare")),
    Metric("images_per_second", "cell", "images/s", "images/s", ",.0f", tables=("cells", "batch")),
    # derived by the analysis (harness/analysis.py, recommend.py), listed here so tables show them next to speed
    Metric("rates_tried", "derived", "rates", integer=True),  # the report names the picks in words
    Metric("steps_to_target", "derived", "steps", "steps to target", ",.0f", seeds=("mean",),
           tables=("cells", "batch", "rates")),
    Metric("target_resolution_steps", "derived", "steps", "± resolution (steps)", ",.0f", seeds=("max",),
           tables=("cells", "batch")),
    Metric("steps_before_target", "derived", "steps"),  # the last check below the target
    Metric("target_read_at", "derived", "text"),  # check (evals.csv) or epoch (results without checks)
    Metric("reached_target", "derived", "cells", "seeds at target", "d", seeds=("sum",), tables=("batch", "rates"),
           integer=True),
    Metric("time_to_target_s", "derived", "s", "time to target (s)", ".3g", seeds=("mean",),
           tables=("cells", "batch", "compare", "rates")),
    Metric("time_to_target_low_s", "derived", "s", "90% from", ".3g", tables=BATCH),  # bootstrap, per batch
    Metric("time_to_target_high_s", "derived", "s", "90% to", ".3g", tables=BATCH),
    Metric("win_share", "derived", "1", "wins", ".0%", tables=BATCH),
    Metric("measured_time_to_target_s", "derived", "s", "measured (s)", ".3g", seeds=("mean",), tables=BATCH),
    Metric("lr_edge", "derived", "text"),  # lowest / highest: the picked rate is at the edge of the rates tried
    Metric("eval_seconds", "cell", "s", "eval (s)", ".2f", tables=CELLS),
    Metric("checks", "cell", "checks", integer=True),
    Metric("check_seconds", "cell", "s", "checks (s)", ".2f", tables=CELLS),
    Metric("peak_allocated_bytes", "cell", "bytes", "peak alloc", "bytes", seeds=("max",),
           tables=("cells", "batch", "compare"), integer=True),
    Metric("peak_reserved_bytes", "cell", "bytes", "peak reserved", "bytes", seeds=("max",), tables=BATCH,
           integer=True),
    Metric("peak_rss_bytes", "cell", "bytes", "peak RSS", "bytes", seeds=("max",),
           tables=("cells", "batch", "compare"), integer=True),
    Metric("energy_j", "cell", "J"),
    Metric("joules_per_image", "cell", "J", "J/image", ".3e", seeds=("mean",), tables=("cells", "batch")),
    # GPU telemetry (harness/telemetry.py), combined over ranks by `ranks`
    Metric("nvml_peak_memory_used_bytes", "cell", "bytes", "GPU mem (NVML)", "bytes", ranks="max", seeds=("max",),
           tables=("cells", "batch"), integer=True),
    Metric("power_mean_w", "cell", "W", ranks="sum"),
    Metric("gpu_util_mean_pct", "cell", "%", ranks="mean"),
    Metric("sm_clock_mean_mhz", "cell", "MHz", ranks="mean"),
    Metric("nvml_samples", "cell", "samples", ranks="sum", integer=True),
    Metric("flops_per_image", "cell", "FLOP", integer=True),
    Metric("compute_precision", "cell", "text"),
    Metric("peak_flops", "cell", "FLOP/s"),
    Metric("mfu", "cell", "1", "MFU", "pct", seeds=("mean",), tables=("cells", "batch")),
    Metric("final_noise_scale", "cell", "images"),
    Metric("preemptions", "cell", "count", integer=True),
    Metric("diverged_at_step", "cell", "steps", integer=True),
    Metric("last_finite_loss", "cell"),

    # harness predict beside the grid (analysis.against_prediction)
    Metric("predicted_steps", "derived", "steps", "predicted steps", ",.0f", tables=("prediction",)),
    Metric("budget_steps", "derived", "steps", "steps the epochs allow", ",.0f", tables=("prediction",)),
    Metric("measured_crossing_steps", "derived", "steps", "measured steps (middle of resolution)", ",.0f",
           tables=("prediction",)),
    Metric("predicted_time_s", "derived", "s", "predicted time (s)", ".3g", tables=("prediction",)),
    Metric("predicted_time_low_s", "derived", "s", "90% from", ".3g", tables=("prediction",)),
    Metric("predicted_time_high_s", "derived", "s", "90% to", ".3g", tables=("prediction",)),
    Metric("measured_crossing_time_s", "derived", "s", "measured time (s)", ".3g", tables=("prediction",)),
    Metric("time_error", "derived", "1", "error", "+.0%", tables=("prediction",)),
    # collapse (harness/collapse.py): per cell, then per ablation variant
    Metric("peak_epoch", "derived", "epochs", "peak epoch", "d", seeds=("median",), tables=("collapse", "variants")),
    Metric("peak_test_accuracy", "derived", "", "peak test acc", ACC, seeds=("mean",), tables=("collapse", "variants")),
    Metric("final_test_accuracy", "derived", "", "final test acc", ACC, seeds=("mean",),
           tables=("collapse", "variants")),
    Metric("drop", "derived", "", "drop", ACC, tables=("collapse",)),
    Metric("deepest_dip", "derived", "", "deepest dip", ACC, seeds=("mean",), tables=("collapse", "variants")),
    Metric("collapsed", "derived", "", "collapsed", "d", seeds=("sum",), tables=("variants",)),
    Metric("collapse_rate", "derived", "1", "collapse rate", ".0%", tables=("variants",)),
)

# NVML's energy counter advances in ticks, not continuously. On an H200 a 1 ms timed window read 0 J,
# and 0.17 s of timed training (4 epochs at batch 2048, split by the validation checks) read 2.5x
# what the sampled power said; from 2.7 s on the two agreed within 7%. Under this much timed training
# the total is not resolved: the writer records it as unknown, and the reader treats older records so.
ENERGY_MIN_TIMED_S = 2.0


def energy_resolved(energy_j: float | None, train_seconds: float | None) -> bool:
    return energy_j is not None and energy_j > 0 and (train_seconds or 0.0) >= ENERGY_MIN_TIMED_S


def at(level: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.level == level)


def keys(level: str) -> tuple[str, ...]:
    return tuple(m.key for m in at(level))


EPOCH_COLUMNS = keys("epoch")
CHECK_COLUMNS = keys("check")
CELL_KEYS = keys("cell")
# the numbers measure.over_ranks combines across processes, by key
RANK_OPS = {m.key: m.ranks for m in METRICS if m.ranks != "same" and m.level in ("epoch", "check", "cell")}


def aggregate_name(metric: Metric, op: str) -> str:
    return metric.key if op == metric.seeds[0] else f"{metric.key}_{op}"


def aggregates(group: str) -> dict[str, tuple[str, str]]:
    """How cells combine into one row per batch size (group "batch") or per ablation variant
    (group "variants"): output column -> (cell column, pandas aggregation)."""
    out = {"n": ("cell_id", "size")}
    for m in METRICS:
        if m.seeds and (group == "variants") == ("variants" in m.tables):
            out |= {aggregate_name(m, op): (m.key, op) for op in m.seeds}
    return out


@dataclass(frozen=True)
class Column:
    """A report table column: the frame's column, its header, its format."""

    key: str
    header: str
    fmt: str


def columns(table: str) -> list[Column]:
    """One report table's columns in registry order: labels first, then (per batch size or per
    variant) each aggregate of every metric shown, with the seed count after the labels."""
    grouped = table in ("batch", "variants")
    labels, values = [], []
    for m in METRICS:
        if table not in m.tables or m.header is None:
            continue
        if not grouped or m.level == "label" or not m.seeds:
            (labels if m.level == "label" else values).append(Column(m.key, m.header, m.fmt))
            continue
        for op in m.seeds:
            # per-batch tables say once that values are means over seeds; other aggregates say so here
            header = "± std" if op == "std" else f"{m.header} ({op})" if op == "median" else m.header
            values.append(Column(aggregate_name(m, op), header, m.fmt))
    return labels + ([Column("n", "n seeds" if table == "batch" else "seeds", "d")] if grouped else []) + values
