"""Seaborn figures as inline PNG data URIs; one function per figure, registered in FIGURES."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: figures only ever go to bytes

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from harness.analysis import ACCURACY  # noqa: E402


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    data_uri: str


def _encode(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _palette(frame: pd.DataFrame) -> dict:
    sizes = sorted(frame["batch_size"].unique())
    return dict(zip(sizes, sns.color_palette("viridis", len(sizes))))


@dataclass(frozen=True)
class FigureData:
    epochs: pd.DataFrame  # done cells' epochs
    table: pd.DataFrame  # per batch size (analysis.by_batch_size)
    sweet_spot: int | None


def accuracy_vs_epoch(d: FigureData) -> Figure | None:
    if d.epochs.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=d.epochs, x="epoch", y="test_accuracy", hue="batch_size", palette=_palette(d.epochs),
                 errorbar=("pi", 100), marker="o", ax=ax)
    ax.set(ylabel="test accuracy", title="Test accuracy per epoch (mean over seeds; band = min..max)")
    ax.legend(title="batch size", fontsize="small")
    return Figure("Accuracy vs epoch", "Look for curves that peak and then fall (collapse), and for "
                  "large batches that need many more epochs to reach the same accuracy.", _encode(fig))


def _mark(ax, d: FigureData, rows: pd.DataFrame, column: str) -> None:
    spot = rows[rows["batch_size"] == d.sweet_spot]
    if not spot.empty:
        ax.scatter(spot["batch_size"], spot[column], s=180, facecolors="none", edgecolors="red", linewidths=2,
                   zorder=5, label=f"sweet spot (batch {d.sweet_spot})")
        ax.legend(fontsize="small")


def time_per_image(d: FigureData) -> Figure | None:
    rows = d.table.dropna(subset=["time_per_image_s"])
    if rows.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    hue = "variant" if rows["variant"].nunique() > 1 else None
    sns.lineplot(data=rows, x="batch_size", y="time_per_image_s", hue=hue, marker="o", ax=left)
    left.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="seconds per image (training steps only)",
             title="Time per image (log-log)")
    _mark(left, d, rows, "time_per_image_s")
    sns.lineplot(data=rows, x="batch_size", y="images_per_second", hue=hue, marker="o", ax=right)
    right.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="images per second", title="Throughput")
    _mark(right, d, rows, "images_per_second")
    return Figure("Time per image and throughput vs batch size", "A slope of -1 means per-step overhead dominates "
                  "(doubling the batch halves the time per image); where the line flattens the hardware is busy "
                  "and bigger batches stop paying. The red ring is the sweet spot.", _encode(fig))


def time_to_target(d: FigureData) -> Figure | None:
    rows = d.table.dropna(subset=["time_to_target_s"])
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=rows, x="batch_size", y="time_to_target_s", marker="o", ax=ax, label="steps x time per step")
    sns.lineplot(data=rows, x="batch_size", y="measured_time_to_target_s", marker="s", ax=ax, label="measured")
    ax.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="training seconds to the target",
           title="Time to the target accuracy")
    _mark(ax, d, rows, "time_to_target_s")
    return Figure("Time to target vs batch size", "The sweet spot is the lowest point among accurate enough batch "
                  "sizes. 'Measured' adds the warm-up steps and counts whole epochs, so it sits slightly above.",
                  _encode(fig))


def steps_to_target(d: FigureData) -> Figure | None:
    rows = d.table.dropna(subset=["steps_to_target"]).sort_values("batch_size")
    if len(rows) < 2:
        return None
    first = rows.iloc[0]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=rows, x="batch_size", y="steps_to_target", marker="o", ax=ax, label="measured")
    ax.plot(rows["batch_size"], first["steps_to_target"] * first["batch_size"] / rows["batch_size"], "--",
            color="grey", label="perfect scaling (steps x B constant)")
    ax.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="optimizer steps to the target",
           title="Steps to target (Shallue et al. 2018)")
    ax.legend(fontsize="small")
    return Figure("Steps to target vs batch size", "Three regimes: on the dashed line doubling the batch halves "
                  "the steps (perfect scaling); then diminishing returns; then a plateau where more data per step "
                  "no longer saves steps (maximal data parallelism). Epoch granularity: steps are counted at "
                  "epoch ends.", _encode(fig))


def pareto(d: FigureData) -> Figure | None:
    rows = d.table.dropna(subset=["time_to_target_s"]).sort_values("time_to_target_s")
    if rows.empty:
        return None
    front = rows[rows[ACCURACY] >= rows[ACCURACY].cummax()]
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.scatterplot(data=rows, x="time_to_target_s", y=ACCURACY, hue="batch_size", palette=_palette(rows), s=70, ax=ax)
    ax.step(front["time_to_target_s"], front[ACCURACY], where="post", color="black", linewidth=1, label="Pareto front")
    ax.set(xscale="log", xlabel="seconds to the target (steps x time per step)", ylabel="test accuracy (mean)",
           title="Accuracy vs time to target")
    ax.legend(fontsize="small")
    return Figure("Accuracy vs time to target", "Points on the black front are not beaten on both speed and "
                  "accuracy by any other batch size; choose among them.", _encode(fig))


def peak_memory(d: FigureData) -> Figure | None:
    table = d.table
    column = "peak_allocated_bytes" if table["peak_allocated_bytes"].notna().any() else "peak_rss_bytes"
    rows = table.dropna(subset=[column])
    if rows.empty:
        return None
    label = "torch.cuda peak allocated" if column == "peak_allocated_bytes" else "process peak RSS"
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(x=rows["batch_size"], y=rows[column] / 2**20, marker="o", ax=ax)
    ax.set(xscale="log", xlabel="global batch size", ylabel=f"{label} (MiB)", title="Peak memory vs batch size")
    return Figure("Peak memory vs batch size", f"Measured as {label}, reset at the start of each cell. "
                  "On CPU the RSS includes the dataset and the Python process, so it grows slowly.", _encode(fig))


def scaling_figure(scaling: pd.DataFrame) -> Figure | None:
    """Across results folders: speed-up and efficiency vs processes, per batch size."""
    if scaling.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=scaling, x="num_processes", y="speedup", hue="batch_size", marker="o", ax=left)
    top = scaling["num_processes"].max()
    left.plot([1, top], [1, top], "--", color="grey", label="linear")
    left.set(xlabel="processes", ylabel="speed-up (time per image)", title="Speed-up")
    sns.lineplot(data=scaling, x="num_processes", y="efficiency", hue="batch_size", marker="o", ax=right)
    right.set(xlabel="processes", ylabel="speed-up / processes", title="Scaling efficiency", ylim=(0, 1.2))
    return Figure("Scaling with processes", "Per batch size, relative to the fewest processes measured. Small "
                  "batches split across processes rarely scale: each rank's share is too small.", _encode(fig))


def collapse_curves(cell: pd.DataFrame, title: str, peak_epoch: int) -> Figure:
    """One collapsed cell: accuracies, gradient and update norms, dead units, Adam state, B_simple."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    panels = [
        ("accuracy", ["train_accuracy", "val_accuracy", "test_accuracy"], "linear"),
        ("gradient norm (mean over steps; dashed: max)", "grad_norm_mean", "log"),
        ("largest update / weights", "update_ratio_max", "log"),
        ("dead units (hidden layers)", "dead_fraction", "linear"),
        ("Adam sqrt(v): median (dashed: min; 0 not drawn)", "adam_sqrt_v_median", "log"),
        ("gradient noise scale B_simple", ["noise_scale"], "log"),
    ]
    for ax, (name, columns, yscale) in zip(axes.flat, panels):
        if isinstance(columns, str):  # a per-layer family: one line per layer
            prefix, columns = columns, sorted(c for c in cell if c.startswith(columns + "_l"))
            partner = {"grad_norm_mean": "grad_norm_max", "adam_sqrt_v_median": "adam_sqrt_v_min"}.get(prefix)
        else:
            prefix, partner = "", None
        drawn = False
        for column in columns:
            values = cell[column] if column in cell else None
            if values is None or values.isna().all():
                continue
            line, = ax.plot(cell["epoch"], values, marker=".", label=column.removeprefix(prefix + "_") if prefix else column)
            if partner:
                ax.plot(cell["epoch"], cell[column.replace(prefix, partner)], "--", color=line.get_color())
            drawn = True
        ax.axvline(peak_epoch, color="red", linewidth=1, alpha=0.6)
        ax.set(title=name, xlabel="epoch", yscale=yscale if drawn else "linear")
        if drawn:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not recorded\n(train.step_diagnostics off)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    fig.suptitle(title)
    fig.tight_layout()
    return Figure(f"Collapse of {title}", "The red line is the epoch of peak test accuracy. Overfitting shows train "
                  "accuracy rising while held-out accuracy falls; instability shows growing updates and shrinking "
                  "sqrt(v); dead units show a rising dead fraction.", _encode(fig))


# add a figure: write a function FigureData -> Figure | None and list it here
FIGURES: list[Callable[[FigureData], Figure | None]] = [
    accuracy_vs_epoch, time_per_image, time_to_target, steps_to_target, pareto, peak_memory]


def render_all(d: FigureData) -> list[Figure]:
    return [fig for make in FIGURES if (fig := make(d)) is not None]
