"""Every number the harness records or derives, in one place: plain data, no torch, no pandas.

One entry per number says where it lives, its unit, how ranks and seeds combine it and how the
report shows it. The CSV columns (results), the summary keys `collect` guarantees, the per-batch
aggregates (analysis), the rank reductions (measure.over_ranks) and the report's tables are all
read from here. To add a per-cell number that the report shows: add a Metric here and compute it
(harness/training/summary.py for a cell's summary, summary.epoch_row for an epoch row).

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
    doc: str = ""  # what it is, in a few words (docs/results-format.md lists it)
    legacy: bool = False  # read in records of earlier versions, never written


def _per_layer(prefix: str, layers: range, unit: str, doc: str) -> list[Metric]:
    return [Metric(f"{prefix}_l{i}", "epoch", unit, doc=f"{doc}, layer {i}") for i in layers]


# why training went wrong (training/diagnostics.py), per epoch; per-step norms only with
# train.step_diagnostics (unknown otherwise), the rest always
STEP_NORMS: tuple[Metric, ...] = (
    *_per_layer("grad_norm_mean", LINEAR_LAYERS, "", "mean gradient norm over the epoch's steps, before clipping"),
    *_per_layer("grad_norm_max", LINEAR_LAYERS, "", "largest gradient norm of the epoch's steps"),
    *_per_layer("update_ratio_max", LINEAR_LAYERS, "1", "largest single-step |dW| / |W|"),
)
STEP_NORM_COLUMNS = tuple(m.key for m in STEP_NORMS)
DIAGNOSTICS: tuple[Metric, ...] = (
    *STEP_NORMS,
    *_per_layer("dead_fraction", HIDDEN_LAYERS, "1", "share of units with slope < 0.01 on every probe image"),
    Metric("max_abs_logit", "epoch", doc="the largest |logit| on the probe of 1,000 training images"),
    Metric("softmax_saturated_fraction", "epoch", "1",
           doc="share of the probe whose float32 softmax top probability is exactly 1"),
    *_per_layer("adam_sqrt_v_min", LINEAR_LAYERS, "", "Adam's smallest bias-corrected sqrt(v)"),
    *_per_layer("adam_sqrt_v_median", LINEAR_LAYERS, "", "Adam's median bias-corrected sqrt(v)"),
    Metric("noise_scale", "epoch", "images",
           doc="B_simple (McCandlish et al.) on a fixed probe of 2,048 training images"),
)
DIAGNOSTIC_COLUMNS = tuple(m.key for m in DIAGNOSTICS)

ACC = ".4f"
CELLS, BATCH, COMPARE = ("cells",), ("batch",), ("compare",)

METRICS: tuple[Metric, ...] = (
    # identity of a cell in the tidy frame (collect.cell_row); shown first in the tables
    Metric("cell_id", "label", header="cell", fmt="s", tables=("cells", "collapse"),
           doc="the cell's id: a readable slug and a hash of every setting"),
    Metric("status", "label", header="status", fmt="s", tables=("cells", "collapse"),
           doc="done, oom, diverged, failed or running"),
    Metric("variant", "label", header="other settings", fmt="s", tables=("batch", "variants", "rates", "cells"),
           doc="every swept setting other than batch size, seed and learning rate, and the ablation variant"),
    Metric("batch_size", "label", "images", header="batch", fmt="d",
           tables=("cells", "batch", "compare", "collapse", "rates", "prediction"), doc="the global batch size"),
    Metric("source", "label", header="results folder", fmt="s", tables=COMPARE,
           doc="the results folder the cell was read from"),
    Metric("seed", "label", header="seed", fmt="d", tables=("cells", "collapse"), doc="train.seed"),
    Metric("num_processes", "label", header="processes", fmt="d", seeds=("first",), tables=COMPARE, integer=True,
           doc="processes that trained the cell"),
    Metric("threads", "label", header="threads", fmt="d", seeds=("first",), tables=("cells", "batch", "compare"),
           integer=True, doc="CPU threads per process (environment.cpu_threads; harness/training/threads.py)"),

    # per epoch (epochs.csv)
    Metric("epoch", "epoch", integer=True, doc="1-based"),
    Metric("train_loss", "epoch", ranks="mean", doc="mean loss of the epoch's steps"),
    # accuracies: each rank scores its slice, the correct counts are summed (train.evaluate)
    Metric("train_accuracy", "epoch", doc="on the fixed prefix of data.train_eval_size training images"),
    Metric("val_accuracy", "epoch", doc="on the held-out validation split"),
    Metric("test_accuracy", "epoch", doc="on the test set"),
    Metric("images_seen", "epoch", "images", integer=True, doc="images trained on so far"),
    Metric("optimizer_steps", "epoch", "steps", integer=True, doc="optimizer steps so far"),
    Metric("timed_steps", "epoch", "steps", integer=True,
           doc="the epoch's steps inside timed windows (warm-up excluded)"),
    Metric("train_seconds", "epoch", "s", ranks="max", doc="seconds of the epoch's timed windows, the slowest rank's"),
    Metric("time_per_image_s", "epoch", "s", doc="train_seconds / (timed_steps x batch size)"),
    Metric("eval_seconds", "epoch", "s", ranks="max", doc="the epoch-end evaluation, on its own clock"),
    Metric("energy_j", "epoch", "J", ranks="sum", doc="NVML energy summed over the epoch's timed windows (each "
                                                       "reading is quantised: not used for joules_per_image)"),
    Metric("peak_allocated_bytes", "epoch", "bytes", ranks="max", integer=True,
           doc="torch.cuda peak allocated since the cell began"),
    Metric("peak_reserved_bytes", "epoch", "bytes", ranks="max", integer=True,
           doc="torch.cuda peak reserved since the cell began"),
    Metric("peak_rss_bytes", "epoch", "bytes", ranks="max", integer=True,
           doc="the process's peak resident memory (Linux VmHWM) since the cell began"),
    Metric("diagnostics_seconds", "epoch", "s", ranks="max", doc="the epoch-end diagnostics, on their own clock"),
    Metric("cpu_share", "epoch", "1", doc="CPU time of the timed steps / (their wall time x intra-op threads), "
                                          "the least-served rank's (harness/timing.py)"),
    Metric("load_at_end", "epoch", "threads", doc="the machine's 1-minute load average at the epoch's end"),
    Metric("input_wait_seconds", "epoch", "s", ranks="max",
           doc="of train_seconds, the time the steps waited for their batch from the DataLoader, the "
               "longest-waiting rank's (data.input=loader; empty on the device path)"),
    *DIAGNOSTICS,

    # per validation check within training (evals.csv; harness/checks.py says when)
    Metric("step", "check", "steps", integer=True, doc="the cell's optimizer step at the check"),
    Metric("epoch", "check", integer=True, doc="the epoch the check falls in"),
    Metric("images_seen", "check", "images", integer=True, doc="images trained on so far"),
    Metric("train_seconds", "check", "s",
           doc="training so far, warm-up included: the sum of the windows"),
    Metric("window_steps", "check", "steps", integer=True,
           doc="timed steps since the previous check"),
    Metric("window_seconds", "check", "s", ranks="max",
           doc="their seconds, the slowest rank's: one sample of time per step"),
    Metric("window_warmup_steps", "check", "steps", integer=True, doc="warm-up steps since the previous check"),
    Metric("window_warmup_seconds", "check", "s", ranks="max", doc="their seconds"),
    Metric("window_cpu_share", "check", "1", ranks="min", doc="the timed steps' CPU time / (wall time x threads)"),
    Metric("window_load_start", "check", "threads", ranks="max",
           doc="the machine's 1-minute load average where they began"),
    Metric("window_load_end", "check", "threads", ranks="max", doc="and where they ended"),
    Metric("window_gpu_util_pct", "check", "%", ranks="max",
           doc="NVML's mean GPU utilisation over the timed steps (a GPU with NVML; else empty)"),
    Metric("val_accuracy", "check", doc="validation accuracy at the check"),
    Metric("val_loss", "check", doc="validation loss at the check"),
    Metric("lr_at_check", "check", doc="the learning rate the next step uses (optim.schedule; constant without one)"),
    Metric("check_seconds", "check", "s", ranks="max",
           doc="the check's own clock, never training time"),

    # per cell (result.json summary; harness/training/summary.py)
    Metric("epochs_completed", "cell", "epochs", header="epochs", fmt="d", tables=CELLS, integer=True,
           doc="epochs with a row in epochs.csv"),
    Metric("steps_per_epoch", "cell", "steps", integer=True, doc="optimizer steps per epoch"),
    Metric("local_batch_size", "cell", "images", integer=True, doc="each process's share of the batch"),
    Metric("learning_rate", "cell", "", header="learning rate", fmt=".3g", tables=("cells", "batch", "rates"),
           doc="the rate the cell trained at (after any scaling rule)"),
    Metric("optimizer_steps", "cell", "steps", integer=True, doc="optimizer steps in all"),
    Metric("images_seen", "cell", "images", integer=True, doc="images trained on in all"),
    Metric("best_epoch", "cell", "epochs", header="best epoch", fmt="d", tables=CELLS, integer=True,
           doc="the epoch of best validation accuracy (the first of equals)"),
    Metric("best_val_accuracy", "cell", "", header="best val acc", fmt=ACC, seeds=("mean",), tables=CELLS,
           doc="validation accuracy at best_epoch"),
    Metric("test_accuracy_at_best_val", "cell", "", header="test acc @ best val", fmt=ACC, seeds=("mean", "std"),
           tables=("cells", "batch", "compare", "rates"), doc="the cell's accuracy: test accuracy at best_epoch"),
    Metric("train_loss_at_best_val", "cell", "", header="train loss @ best val", fmt=".4f", seeds=("mean",),
           tables=CELLS,
           doc="train loss at best_epoch"),
    Metric("final_val_accuracy", "cell", doc="at the last epoch"),
    Metric("final_test_accuracy", "cell", "", header="final test acc", fmt=ACC, tables=CELLS, doc="at the last epoch"),
    Metric("final_train_loss", "cell", doc="at the last epoch"),
    Metric("warmup_steps", "cell", "steps", header="untimed steps", fmt="d", tables=CELLS, integer=True,
           doc="the cell's first steps, outside the clock (train.untimed_steps; not a learning-rate warm-up)"),
    Metric("warmup_seconds", "cell", "s", doc="their seconds"),
    Metric("first_step_losses", "cell", "list", doc="the warm-up steps' losses, averaged over ranks"),
    Metric("train_seconds", "cell", "s", doc="seconds of every timed window"),
    Metric("timed_images", "cell", "images", integer=True, doc="images in the timed windows"),
    Metric("time_per_image_s", "cell", "s", header="time/image", fmt="us", seeds=("mean", "std"),
           tables=("cells", "batch", "compare"), doc="train_seconds / timed_images"),
    Metric("images_per_second", "cell", "images/s", header="images/s", fmt=",.0f", tables=("cells", "batch"),
           doc="timed_images / train_seconds"),
    Metric("tokens_per_second", "cell", "tokens/s", header="tokens/s", fmt=",.0f", seeds=("mean",),
           tables=("cells", "batch"), doc="images_per_second x workload.tokens_per_example, where given"),
    # derived by the analysis (harness/analysis/per_batch.py, recommend.py), listed here so tables show them
    # next to speed
    Metric("rates_tried", "derived", "rates", integer=True,
           doc="learning rates trained at this batch size"),
    Metric("steps_to_target", "derived", "steps", header="steps to target", fmt=",.0f", seeds=("mean",),
           tables=("cells", "batch", "rates"),
           doc="where a line of validation accuracy against log steps, fitted to the checks around it, reaches the "
               "target (it decides)"),
    Metric("target_resolution_steps", "derived", "steps", header="resolution (steps)", fmt=",.0f", seeds=("max",),
           tables=("cells", "batch"), doc="the gap between the two checks around the crossing"),
    Metric("steps_to_target_se", "derived", "steps", header="± fit (steps)", fmt=",.0f", seeds=("max",),
           tables=("cells", "batch"),
           doc="standard error of the fitted crossing, from the checks' scatter about the line (empty where the "
               "first check stands)"),
    Metric("steps_before_target", "derived", "steps", doc="the check before the crossing (0 before the first)"),
    Metric("steps_after_target", "derived", "steps", doc="the check at or after the crossing"),
    Metric("steps_to_target_first_check", "derived", "steps", header="first check at target", fmt=",.0f",
           seeds=("mean",),
           tables=("cells", "batch"), doc="the first check at or above the target: moves with the check schedule"),
    Metric("target_read_at", "derived", "text",
           doc="check (evals.csv) or epoch (results without checks)"),
    Metric("reached_target", "derived", "cells", header="seeds at target", fmt="d", seeds=("sum",),
           tables=("batch", "rates"),
           integer=True, doc="seeds that reached the target"),
    Metric("time_to_target_s", "derived", "s", header="time to target (s)", fmt=".3g", seeds=("mean",),
           tables=("cells", "batch", "compare", "rates"), doc="steps_to_target x time per step"),
    Metric("time_to_target_low_s", "derived", "s", header="90% from", fmt=".3g", tables=BATCH,
           doc="5th percentile of the draws of the mean time (Student's t over seeds)"),
    Metric("time_to_target_high_s", "derived", "s", header="90% to", fmt=".3g", tables=BATCH,
           doc="95th percentile of the draws of the mean time"),
    Metric("win_share", "derived", "1", header="wins", fmt=".0%", tables=BATCH,
           doc="share of the draws in which it is the fastest of the eligible batch sizes"),
    Metric("measured_time_to_target_s", "derived", "s", header="measured (s)", fmt=".3g", seeds=("mean",), tables=BATCH,
           doc="the training clock at that check, warm-up included"),
    Metric("lr_edge", "derived", "text",
           doc="lowest / highest: the picked rate is at the edge of the rates tried"),
    Metric("eval_seconds", "cell", "s", header="eval (s)", fmt=".2f", tables=CELLS, doc="every epoch-end evaluation"),
    Metric("checks", "cell", "checks", integer=True, doc="validation checks within training"),
    Metric("check_seconds", "cell", "s", header="checks (s)", fmt=".2f", tables=CELLS, doc="their seconds"),
    Metric("checks_skipped", "cell", "checks", integer=True,
           doc="scheduled checks skipped to keep checks within 25% of the training time (harness/checks.py)"),
    Metric("peak_allocated_bytes", "cell", "bytes", header="peak alloc", fmt="bytes", seeds=("max",),
           tables=("cells", "batch", "compare"), integer=True, doc="torch.cuda peak allocated"),
    Metric("peak_reserved_bytes", "cell", "bytes", header="peak reserved", fmt="bytes", seeds=("max",), tables=BATCH,
           integer=True, doc="torch.cuda peak reserved"),
    Metric("peak_rss_bytes", "cell", "bytes", header="peak RSS", fmt="bytes", seeds=("max",),
           tables=("cells", "batch", "compare"), integer=True, doc="peak resident memory of the process"),
    Metric("energy_j", "cell", "J", doc="joules_per_image x timed_images: the energy window's rate over all the timed "
                                         "training"),
    Metric("joules_per_image", "cell", "J", header="J/image", fmt=".3e", seeds=("mean",), tables=("cells", "batch"),
           doc="NVML energy over the energy window / its images; unknown when that window is under 2 s"),
    Metric("energy_window_s", "cell", "s", doc="the longest contiguous timed window (no check inside) with an NVML "
                                               "energy reading: where joules_per_image is read"),
    # GPU telemetry (harness/training/telemetry.py), combined over ranks by `ranks`
    Metric("nvml_peak_memory_used_bytes", "cell", "bytes", header="GPU mem (NVML)", fmt="bytes", ranks="max",
           seeds=("max",),
           tables=("cells", "batch"), integer=True, doc="device memory used, as NVML sees it"),
    Metric("power_mean_w", "cell", "W", ranks="sum", doc="mean power inside timed windows"),
    Metric("gpu_util_mean_pct", "cell", "%", ranks="mean", doc="mean GPU utilisation inside timed windows"),
    Metric("sm_clock_mean_mhz", "cell", "MHz", ranks="mean", doc="mean SM clock inside timed windows"),
    Metric("nvml_samples", "cell", "samples", ranks="sum", integer=True, doc="NVML samples taken (every 50 ms)"),
    Metric("flops_per_example", "cell", "FLOP", integer=True,
           doc="to train on one example: torch's FlopCounterMode over one forward and backward"),
    Metric("flops_per_image", "cell", "FLOP", integer=True, legacy=True,
           doc="the MLP's analytic count, 3 x forward, in records that carry it instead of flops_per_example"),
    Metric("compute_precision", "cell", "text", doc="fp32, tf32, bf16 or fp16"),
    Metric("peak_flops", "cell", "FLOP/s", doc="the device's datasheet peak at that precision"),
    Metric("mfu", "cell", "1", header="MFU", fmt="pct", seeds=("mean",), tables=("cells", "batch"),
           doc="achieved FLOP/s over the peak of all devices"),
    Metric("engine_mode", "cell", "text", header="engine", fmt="s", seeds=("first",),
           tables=("cells", "batch", "compare"),
           doc="the step that ran: eager, compile or cuda_graphs (train.mode auto resolved)"),
    Metric("engine_mode_reason", "cell", "text", doc="why train.mode auto ran eager, not cuda_graphs"),
    Metric("optimizer_ran", "cell", "text", header="optimizer", fmt="s", seeds=("first",), tables=("cells",),
           doc="the optimizer's class: optim.name's (Adam, AdamW, SGD) or workload.optimizer's"),
    Metric("schedule_ran", "cell", "text", header="schedule", fmt="s", seeds=("first",), tables=("cells",),
           doc="the learning-rate schedule over the cell's steps, in words (optim.schedule, or workload.optimizer's)"),
    Metric("step_path", "cell", "text",
           doc="lean (torch's backward and optimizer) or accelerate (Accelerate's wrappers: DDP, fp16)"),
    Metric("micro_batch_size", "cell", "examples", header="micro-batch", fmt="d", seeds=("first",),
           tables=("cells", "batch"), integer=True,
           doc="examples per forward and backward on each process (train.micro_batch_size resolved; B/P without it)"),
    Metric("accumulation_steps", "cell", "micro-batches", header="accum.", fmt="d", seeds=("max",),
           tables=("cells", "batch"), integer=True, doc="micro-batches whose gradients make one optimizer step"),
    Metric("input_mode", "cell", "text", header="input", fmt="s", seeds=("first",),
           tables=("cells", "batch", "compare"),
           doc="device (every split on the training device) or loader (the training split streamed by a DataLoader)"),
    Metric("input_wait_share", "cell", "1", header="input wait", fmt=".0%", seeds=("max",),
           tables=("cells", "batch"),
           doc="the share of the timed steps' wall time spent waiting for input (data.input=loader)"),
    Metric("final_noise_scale", "cell", "images", doc="noise_scale at the last epoch"),
    Metric("cpu_share", "cell", "1", header="CPU share", fmt=".0%", seeds=("min",), tables=("cells",),
           doc="the timed steps' CPU time / (wall time x threads), over the cell (harness/timing.py)"),
    Metric("load_average", "cell", "threads",
           doc="median 1-minute load average at the edges of its checked windows (else at its epochs' ends)"),
    Metric("cores_owned", "cell", "cores", integer=True, doc="the cores the process could run on"),
    Metric("machine_cores", "cell", "cores", integer=True,
           doc="the machine's cores (what the load average is read against)"),
    Metric("time_spread", "cell", "1", doc="slowest / fastest epoch's time per example, from the second epoch on"),
    Metric("time_cv", "cell", "1", doc="robust CV of the epochs' time per example (1.4826 MAD / median)"),
    Metric("timing_disturbed", "cell", "bool",
           doc="the cell's times were measured while it competed for the machine (harness/timing.py)"),
    Metric("timing_disturbed_reason", "cell", "text", doc="why, in words"),
    Metric("b_simple_skipped", "cell", "epochs", integer=True,
           doc="epochs whose noise_scale was skipped to keep it within train.diagnostics_budget"),
    Metric("val_examples", "cell", "examples", integer=True, doc="examples in the validation split"),
    Metric("validation_split", "cell", "text",
           doc="where they came from: held_out (data.val_size of the training examples, by data.val_split) or "
               "workload (the 'val' split the workload's load() returned)"),
    Metric("preemptions", "cell", "count", integer=True, doc="times the cell was stopped and resumed"),
    Metric("diverged_at_step", "cell", "steps", integer=True,
           doc="the first step whose loss was not finite (diverged cells only)"),
    Metric("last_finite_loss", "cell", doc="the loss of the step before it (diverged cells only)"),

    # harness predict beside the grid (analysis.against_prediction)
    Metric("predicted_steps", "derived", "steps", header="predicted steps", fmt=",.0f", tables=("prediction",),
           doc="harness predict's steps to the crossing"),
    Metric("predicted_steps_low", "derived", "steps", header="90% from", fmt=",.0f", tables=("prediction",),
           doc="5th percentile for the mean of the grid's seeds (seed noise, fit and misfit: analysis/fit.py)"),
    Metric("predicted_steps_high", "derived", "steps", header="90% to", fmt=",.0f", tables=("prediction",),
           doc="95th percentile for the mean of the grid's seeds"),
    Metric("budget_steps", "derived", "steps", header="steps the epochs allow", fmt=",.0f", tables=("prediction",),
           doc="epochs x steps per epoch"),
    Metric("measured_crossing_steps", "derived", "steps", header="measured steps (fitted crossing)", fmt=",.0f",
           tables=("prediction",), doc="the grid's steps to target at that batch size"),
    Metric("steps_inside", "derived", "", header="inside 90%", fmt="yesno", tables=("prediction",),
           doc="whether the measured steps lie in the predicted 90% interval"),
    Metric("predicted_time_s", "derived", "s", header="predicted time (s)", fmt=".3g", tables=("prediction",),
           doc="predicted steps x predicted time per step"),
    Metric("predicted_time_low_s", "derived", "s", header="90% from", fmt=".3g", tables=("prediction",),
           doc="5th percentile"),
    Metric("predicted_time_high_s", "derived", "s", header="90% to", fmt=".3g", tables=("prediction",),
           doc="95th percentile"),
    Metric("measured_crossing_time_s", "derived", "s", header="measured time (s)", fmt=".3g", tables=("prediction",),
           doc="measured crossing x the grid's time per step"),
    Metric("time_error", "derived", "1", header="error", fmt="+.0%", tables=("prediction",),
           doc="predicted / measured - 1"),
    # collapse (harness/analysis/collapse.py): per cell, then per ablation variant
    Metric("peak_epoch", "derived", "epochs", header="peak epoch", fmt="d", seeds=("median",),
           tables=("collapse", "variants"),
           doc="the epoch of best test accuracy"),
    Metric("peak_test_accuracy", "derived", "", header="peak test acc", fmt=ACC, seeds=("mean",),
           tables=("collapse", "variants"),
           doc="test accuracy there"),
    Metric("final_test_accuracy", "derived", "", header="final test acc", fmt=ACC, seeds=("mean",),
           tables=("collapse", "variants"), doc="test accuracy at the last epoch"),
    Metric("drop", "derived", "", header="drop", fmt=ACC, tables=("collapse",), doc="peak minus final test accuracy"),
    Metric("deepest_dip", "derived", "", header="deepest dip", fmt=ACC, seeds=("mean",),
           tables=("collapse", "variants"),
           doc="the largest fall below the best-so-far, recovered or not"),
    Metric("collapsed", "derived", "", header="collapsed", fmt="d", seeds=("sum",), tables=("variants",),
           doc="drop above report.collapse_drop, or diverged"),
    Metric("collapse_rate", "derived", "1", header="collapse rate", fmt=".0%", tables=("variants",),
           doc="collapsed cells / seeds of the variant"),
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
