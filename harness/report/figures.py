"""Seaborn figures as inline PNG data URIs; one function per figure, registered in FIGURES.

Variants (every swept setting other than batch size, seed and learning rate, joined into the
`variant` column by harness/analysis/collect.py) are never averaged together: `split` decides, in this one
place, whether a figure separates them by colour or by panel. Each Figure keeps the frame it
plotted, so what a figure shows can be checked as data.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # no display: figures only ever go to bytes

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from harness.analysis.fit import fit_steps
from harness.analysis.per_batch import ACCURACY
from harness.quality import DEFAULT as DEFAULT_QUALITY
from harness.quality import Quality
from harness.report import ramps
from harness.report.axes import ACCURACY_SPAN, accuracy_limits, batch_axis, plain_log

MAX_PANELS = 8
WIDE = 10.0  # inches: every figure spans the page (figures are drawn at 100 dpi)
# readable fonts on a full-width figure; a white grid to read values off
sns.set_theme(context="notebook", style="whitegrid")


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    data_uri: str
    data: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)  # what was plotted


@dataclass(frozen=True)
class FigureData:
    epochs: pd.DataFrame  # epochs of the done cells at each batch size's picked learning rate
    checks: pd.DataFrame  # their validation checks (evals.csv)
    table: pd.DataFrame  # per variant and batch size (analysis + recommend)
    sweet_spots: dict[str, int | None]  # variant -> its sweet spot
    target: float
    prediction: dict | None = None  # predict.json, where the folder has one
    ties: dict[str, list[int]] = field(default_factory=dict)  # variant -> batch sizes tied with its sweet spot
    quality: Quality = DEFAULT_QUALITY  # the workload's metric: its name on the axes, its direction
    unit: str = "image"  # what one example is called
    capacity: dict | None = None  # capacity.json, where the folder has one
    ramps: list[dict] = field(default_factory=list)  # batch schedules beside the grid (analysis/schedules.py)

    def words(self, text: str) -> str:
        """Text written for accuracy and images, in the metric's name and the workload's unit."""
        if self.unit != "image":
            text = text.replace("image", self.unit).replace("Image", self.unit[:1].upper() + self.unit[1:])
        if self.quality.bounded:
            return text
        name = self.quality.name
        return text.replace("accuracy", name).replace("Accuracy", name[:1].upper() + name[1:])

    def span_note(self, text: str) -> str:
        """The sentence on the accuracy axis's span: only where the axis is an accuracy's."""
        return f" {text}" if self.quality.bounded else ""


def split(frame: pd.DataFrame) -> str | None:
    """The column that keeps variants apart, or None when the frame holds one variant."""
    return "variant" if "variant" in frame and frame["variant"].nunique() > 1 else None


def _encode(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _palette(frame: pd.DataFrame) -> dict:
    sizes = sorted(frame["batch_size"].unique())
    return dict(zip(sizes, sns.color_palette("viridis", len(sizes))))


def _panels(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per variant (at most MAX_PANELS, the first ones), or one panel for all."""
    if split(frame) is None:
        return [("", frame)]
    return list(frame.groupby("variant", sort=True))[:MAX_PANELS]


def _grid(count: int, width: float = WIDE / 2, height: float = 3.8):
    columns = min(count, 2)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.remove()
    return fig, list(axes.flat[:count])


def _curves(frame: pd.DataFrame, x: str, y: str, style: dict, decorate) -> tuple[plt.Figure, pd.DataFrame]:
    """Curves per batch size (mean over seeds, band min..max), one panel per variant."""
    data = frame[["variant", "batch_size", "seed", x, y]]
    panels = _panels(data)
    fig, axes = _grid(len(panels), width=WIDE / min(len(panels), 2))
    for ax, (variant, rows) in zip(axes, panels):
        sns.lineplot(data=rows, x=x, y=y, hue="batch_size", palette=_palette(rows), errorbar=("pi", 100), ax=ax,
                     **style)
        decorate(ax, variant)
        ax.legend(title="batch size", fontsize="small")
    fig.tight_layout()
    return fig, data


def accuracy_vs_epoch(d: FigureData) -> Figure | None:
    if d.epochs.empty:
        return None

    def decorate(ax, variant: str) -> None:
        ax.set(ylabel=d.words("test accuracy"), title=variant or d.words("Test accuracy per epoch"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if d.quality.bounded:
            accuracy_limits(ax, d.epochs["test_accuracy"])

    fig, data = _curves(d.epochs, "epoch", "test_accuracy", {"marker": "o"}, decorate)
    return Figure(d.words("Accuracy vs epoch"), "Mean over seeds, band min..max; one panel per variant. Look for "
                  "curves that peak and then fall (collapse), and for large batches that need many more epochs."
                  + d.span_note(f"The accuracy axis spans at least {ACCURACY_SPAN * 100:.0f} points."),
                  _encode(fig), data)


def validation_vs_steps(d: FigureData) -> Figure | None:
    if d.checks.empty:
        return None

    def decorate(ax, variant: str) -> None:
        ax.axhline(d.target, color="red", linewidth=1, linestyle="--", label=f"target {d.target:g}")
        ax.set(xscale="log", ylabel=d.words("validation accuracy"), xlabel="optimizer steps (log)",
               title=variant or d.words("Validation accuracy at each check"))
        if d.quality.bounded:
            ax.set_ylim(max(0.0, d.target - 0.1), 1.0)

    fig, data = _curves(d.checks, "step", "val_accuracy", {}, decorate)
    return Figure(d.words("Validation accuracy at each check"), "The checks behind steps to target (log-spaced in "
                  "steps, so each crossing is read to within about 10%); the dashed line is the target.",
                  _encode(fig), data)


def _mark(ax, d: FigureData, rows: pd.DataFrame, column: str) -> None:
    """Ring each variant's sweet spot; a smaller ring marks the batch sizes tied with it."""
    spots = rows[[d.sweet_spots.get(v) == b for v, b in zip(rows["variant"], rows["batch_size"])]]
    tied = rows[[b in d.ties.get(v, []) for v, b in zip(rows["variant"], rows["batch_size"])]]
    if not tied.empty:
        ax.scatter(tied["batch_size"], tied[column], s=110, facecolors="none", edgecolors="orange", linewidths=2,
                   zorder=5, label="tied with it")
    if not spots.empty:
        ax.scatter(spots["batch_size"], spots[column], s=220, facecolors="none", edgecolors="red", linewidths=2.5,
                   zorder=6, label="sweet spot")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def time_per_image(d: FigureData) -> Figure | None:
    data = d.table.dropna(subset=["time_per_image_s"])[["variant", "batch_size", "time_per_image_s",
                                                        "images_per_second"]]
    if data.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDE, 4.2))
    for ax, column, label, title in ((left, "time_per_image_s", d.words("µs per image (training steps only)"),
                                      d.words("Time per image")),
                                     (right, "images_per_second", d.words("images per second"), "Throughput")):
        shown = data.assign(**{column: data[column] * (1e6 if column == "time_per_image_s" else 1)})
        sns.lineplot(data=shown, x="batch_size", y=column, hue=split(shown), marker="o", ax=ax)
        ax.set(yscale="log", ylabel=label, title=title)
        plain_log(ax.yaxis)
        batch_axis(ax, data["batch_size"])
        _mark(ax, d, shown, column)
    fig.tight_layout()
    return Figure(d.words("Time per image and throughput vs batch size"), d.words(
        "A slope of -1 means per-step overhead dominates (doubling the batch halves the time per image); where the "
        "line flattens the hardware is busy and bigger batches stop paying. Red ring: the sweet spot; orange: batch "
        "sizes tied with it."), _encode(fig), data)


def _with_bars(ax, rows: pd.DataFrame, y: str, low: str, high: str, label: str) -> None:
    """The value as a line, its interval as a bar (the value may sit at the bar's end: steps to
    target are the first check at the target, the top of their resolution)."""
    line, = ax.plot(rows["batch_size"], rows[y], marker="o", label=label)
    ax.vlines(rows["batch_size"], rows[low], rows[high], color=line.get_color(), linewidth=2, alpha=0.6)


def _predicted(ax, d: FigureData, column: str, interval: str) -> None:
    """harness predict's curve and its 90% band, over the measured points."""
    rows = (d.prediction or {}).get("fit") and d.prediction["fit"]["predictions"]
    if not rows:
        return
    frame = pd.DataFrame(rows)
    ax.plot(frame["batch_size"], frame[column], color="purple", linestyle="-.", label="predicted (harness predict)")
    bounds = [r[interval] or [None, None] for r in rows]  # a bound predict could not give: no band there
    low, high = ([math.nan if b[i] is None else b[i] for b in bounds] for i in (0, 1))
    ax.fill_between(frame["batch_size"], low, high, color="purple", alpha=0.12)


def time_to_target(d: FigureData) -> Figure | None:
    """The first screen's figure: time to target with its interval, the sweet spot and its ties
    marked, and the batch sizes that never reached the target drawn at the top."""
    columns = ["variant", "batch_size", "time_to_target_s", "time_to_target_low_s", "time_to_target_high_s"]
    table = d.table[columns]
    data = table.dropna(subset=["time_to_target_s"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(WIDE, 4.4))
    for variant, rows in data.sort_values("batch_size").groupby("variant", sort=True):
        _with_bars(ax, rows.fillna({"time_to_target_low_s": rows["time_to_target_s"],
                                    "time_to_target_high_s": rows["time_to_target_s"]}),
                   "time_to_target_s", "time_to_target_low_s", "time_to_target_high_s", variant or "time to target")
    _predicted(ax, d, "time_to_target_s", "time_interval_s")
    ramps.draw(ax, d.ramps)
    ax.set(yscale="log", ylabel="training seconds to the target",
           title=d.words(f"Time to {d.target:g} validation accuracy (bars: 90% interval)"))
    plain_log(ax.yaxis)
    missed = table[table["time_to_target_s"].isna()]
    if not missed.empty:  # at the top of the axis, so they do not silently vanish
        top = float(data[["time_to_target_s", "time_to_target_high_s"]].max().max()) * 2.5
        ax.scatter(missed["batch_size"], [top] * len(missed), marker="x", s=80, color="grey", zorder=5,
                   label=f"did not reach {d.target:g}")
        for batch in missed["batch_size"]:
            ax.annotate("did not reach", (batch, top), textcoords="offset points", xytext=(0, -16), ha="center",
                        fontsize="small", color="grey")
    batch_axis(ax, table["batch_size"])
    _mark(ax, d, data, "time_to_target_s")
    fig.tight_layout()
    return Figure("Time to target vs batch size", "Steps to target x time per step, at each batch size's learning "
                  "rate. Bars: the 90% interval (Student's t over seeds; with one seed, the crossing's standard "
                  "error and timing only). Red ring: the "
                  "sweet spot, the lowest point among accurate enough batch sizes; orange: tied with it; grey x: "
                  "never reached the target." + ramps.caption(d.ramps), _encode(fig), table)


def steps_to_target(d: FigureData) -> Figure | None:
    data = d.table.dropna(subset=["steps_to_target"])[["variant", "batch_size", "learning_rate", "steps_to_target",
                                                       "target_resolution_steps", "steps_to_target_se"]]
    if data.groupby("variant")["batch_size"].nunique().max() < 2 if not data.empty else True:
        return None
    fig, ax = plt.subplots(figsize=(WIDE, 4.4))
    for variant, rows in data.sort_values("batch_size").groupby("variant", sort=True):
        # the bars: how sharply the checks read the crossing, by their gap or, where wider, the fit's standard error
        half = np.fmax(rows["target_resolution_steps"] / 2, rows["steps_to_target_se"])
        _with_bars(ax, rows.assign(low=rows["steps_to_target"] - half, high=rows["steps_to_target"] + half),
                   "steps_to_target", "low", "high", variant or "measured")
        first = rows.iloc[0]
        ax.plot(rows["batch_size"], first["steps_to_target"] * first["batch_size"] / rows["batch_size"], "--",
                color="grey",
                label="perfect scaling (steps x B constant)" if variant == data["variant"].min() else None)
        model = fit_steps(rows["batch_size"], rows["steps_to_target"])
        if model is not None:  # where the regimes turn: S(B) = S_min (1 + B_noise / B)
            grid = np.geomspace(rows["batch_size"].min(), rows["batch_size"].max(), 50)
            ax.plot(grid, model.steps(grid), ":", color="black", linewidth=1,
                    label=f"S_min (1 + B_noise/B): S_min {model.s_min:,.0f}")
            ax.axvline(model.b_noise, color="black", linewidth=0.8, alpha=0.4, label=f"B_noise {model.b_noise:,.0f}")
    _predicted(ax, d, "steps_to_target", "steps_interval")
    ax.set(yscale="log", ylabel="optimizer steps to the target", title="Steps to target (Shallue et al. 2018)")
    plain_log(ax.yaxis)
    batch_axis(ax, data["batch_size"])
    _mark(ax, d, data, "steps_to_target")
    fig.tight_layout()
    return Figure("Steps to target vs batch size", "Three regimes: on the dashed line doubling the batch halves "
                  "the steps (perfect scaling); then diminishing returns; then a plateau where more data per step "
                  "no longer saves steps (maximal data parallelism). The dotted curve is McCandlish et al.'s "
                  "S(B) = S_min (1 + B_noise / B) fitted to the points; the thin vertical line at B_noise is where "
                  "perfect scaling turns into diminishing returns. Bars: how sharply the checks read the crossing, "
                  "± half the gap between the checks around it or, where larger, the fitted crossing's standard "
                  "error (the largest over seeds). Each batch size at its picked learning rate.",
                  _encode(fig), data)


def pareto(d: FigureData) -> Figure | None:
    data = d.table.dropna(subset=["time_to_target_s"])[["variant", "batch_size", "time_to_target_s", ACCURACY]]
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(WIDE, 4.4))
    sns.scatterplot(data=data, x="time_to_target_s", y=ACCURACY, hue="batch_size", style=split(data),
                    palette=_palette(data), s=80, ax=ax)
    for variant, rows in data.sort_values("time_to_target_s").groupby("variant", sort=True):
        better = d.quality.oriented(rows[ACCURACY])
        front = rows[better >= better.cummax()]
        ax.step(front["time_to_target_s"], front[ACCURACY], where="post", linewidth=1,
                label=f"Pareto front {variant}".strip())
    spots = data[[d.sweet_spots.get(v) == b for v, b in zip(data["variant"], data["batch_size"])]]
    ax.scatter(spots["time_to_target_s"], spots[ACCURACY], s=220, facecolors="none", edgecolors="red",
               linewidths=2.5, zorder=6, label="sweet spot")
    ax.set(xscale="log", xlabel="seconds to the target (steps x time per step)",
           ylabel=d.words("test accuracy (mean)"), title=d.words("Accuracy vs time to target"))
    plain_log(ax.xaxis)
    if d.quality.bounded:
        accuracy_limits(ax, data[ACCURACY])
    ax.legend(fontsize="small")
    fig.tight_layout()
    return Figure(d.words("Accuracy vs time to target"), d.words(
        "Points on a front are not beaten on both speed and accuracy by any other batch size of their variant; "
        "choose among them.") + d.span_note(f"The accuracy axis spans at least {ACCURACY_SPAN * 100:.0f} points, so "
                                            f"a difference of a tenth of a point stays small."), _encode(fig), data)


def peak_memory(d: FigureData) -> Figure | None:
    """Peak memory from zero, batch sizes that accumulated marked; with capacity.json, its trials,
    the fitted memory model and the capacity. On a CPU without capacity.json drawn only where it
    varies by more than 5%."""
    table, cap = d.table, d.capacity
    column = "peak_allocated_bytes" if table["peak_allocated_bytes"].notna().any() else "peak_rss_bytes"
    data = table.dropna(subset=[column])[["variant", "batch_size", column, "accumulation_steps"]]
    if data.empty or (cap is None and column == "peak_rss_bytes" and data[column].max() < 1.05 * data[column].min()):
        return None
    label = "torch.cuda peak allocated" if column == "peak_allocated_bytes" else "process peak RSS"
    fig, ax = plt.subplots(figsize=(WIDE, 4.2))
    shown = data.assign(mib=data[column] / 2**20)
    sns.lineplot(data=shown, x="batch_size", y="mib", hue=split(data), marker="o", ax=ax)
    accumulated = shown[shown["accumulation_steps"].fillna(1) > 1]
    if len(accumulated):
        ax.scatter(accumulated["batch_size"], accumulated["mib"], s=140, facecolors="none", edgecolors="black",
                   label="with accumulation", zorder=5)
    top = shown["mib"].max()
    if cap is not None:
        top = max(top, _draw_capacity(ax, cap))
    ax.set(ylabel=f"{label} (MiB)", title="Peak memory vs batch size", ylim=(0, top * 1.1))
    batch_axis(ax, data["batch_size"])
    _mark(ax, d, shown, "mib")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    extra = "" if cap is None else (
        f" Crosses: capacity.json's trials ({cap['device']}, {cap['num_processes']} process(es)), at micro-batch x "
        f"processes; the dashed line is its fitted memory model (fixed + per-example bytes), the dotted one the "
        f"memory it could use. Circled: batch sizes that ran as accumulated micro-batches (their peak is a "
        f"micro-batch's).")
    return Figure("Peak memory vs batch size", f"Measured as {label}, reset at the start of each cell; the axis "
                  "starts at zero. On CPU the RSS includes the dataset and the Python process, so it grows slowly."
                  + extra, _encode(fig), data)


def _draw_capacity(ax, cap: dict) -> float:
    """capacity.json on the memory figure: its trials, its line, its limit; returns the top in MiB."""
    processes, model = cap["num_processes"], cap.get("memory_model") or {}
    reads = model.get("reads", "peak_rss_bytes")
    trials = [t for t in cap["trials"] if t.get(reads)]
    xs = [t["micro_batch_size"] * processes for t in trials]
    ax.scatter(xs, [t[reads] / 2**20 for t in trials], marker="x", c=["tab:green" if t["fits"] else "tab:red"
                                                                      for t in trials], label="capacity trials")
    top = max((t[reads] / 2**20 for t in trials), default=0.0)
    if model and xs:
        line = [min(xs), max(xs)]
        ax.plot(line, [(model["fixed_bytes"] + model["per_example_bytes"] * x / processes) / 2**20 for x in line],
                "--", color="gray", label="fitted memory model")
    if cap.get("memory_limit_bytes"):
        ax.axhline(cap["memory_limit_bytes"] / 2**20, ls=":", color="black", label="capacity")
        top = max(top, cap["memory_limit_bytes"] / 2**20)
    return top


def scaling_figure(scaling: pd.DataFrame) -> Figure | None:
    """Across results folders: speed-up and efficiency vs processes, per batch size."""
    if scaling.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDE, 4.2))
    sns.lineplot(data=scaling, x="num_processes", y="speedup", hue="batch_size", style=split(scaling), marker="o",
                 ax=left)
    top = scaling["num_processes"].max()
    left.plot([1, top], [1, top], "--", color="grey", label="linear")
    left.set(xlabel="processes", ylabel="speed-up (time per image)", title="Speed-up")
    sns.lineplot(data=scaling, x="num_processes", y="efficiency", hue="batch_size", style=split(scaling), marker="o",
                 ax=right)
    right.set(xlabel="processes", ylabel="speed-up / processes", title="Scaling efficiency", ylim=(0, 1.2))
    for ax in (left, right):
        ax.set_xticks(sorted(scaling["num_processes"].unique()))
    fig.tight_layout()
    return Figure("Scaling with processes", "Per batch size, relative to the fewest processes measured. Small "
                  "batches split across processes rarely scale: each rank's share is too small.", _encode(fig), scaling)


# add a figure: write a function FigureData -> Figure | None and list it here
# (time_to_target is drawn on the first screen, above these)
FIGURES: list[Callable[[FigureData], Figure | None]] = [
    accuracy_vs_epoch, validation_vs_steps, time_per_image, steps_to_target, pareto, peak_memory]


def render_all(d: FigureData) -> list[Figure]:
    return [fig for make in FIGURES if (fig := make(d)) is not None]
