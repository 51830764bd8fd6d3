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


def accuracy_vs_epoch(epochs: pd.DataFrame, table: pd.DataFrame) -> Figure | None:
    if epochs.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=epochs, x="epoch", y="test_accuracy", hue="batch_size", palette=_palette(epochs),
                 errorbar=("pi", 100), marker="o", ax=ax)
    ax.set(ylabel="test accuracy", title="Test accuracy per epoch (mean over seeds; band = min..max)")
    ax.legend(title="batch size", fontsize="small")
    return Figure("Accuracy vs epoch", "Look for curves that peak and then fall (collapse), and for "
                  "large batches that need many more epochs to reach the same accuracy.", _encode(fig))


def time_per_image(epochs: pd.DataFrame, table: pd.DataFrame) -> Figure | None:
    rows = table.dropna(subset=["time_per_image_s"])
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=rows, x="batch_size", y="time_per_image_s", hue="variant" if rows["variant"].nunique() > 1 else None,
                 marker="o", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="global batch size", ylabel="seconds per image (training steps only)",
           title="Time per image vs batch size (log-log)")
    return Figure("Time per image vs batch size", "A slope of -1 means per-step overhead dominates "
                  "(doubling the batch halves the time per image); where the line flattens, the hardware "
                  "is busy and bigger batches stop paying.", _encode(fig))


def peak_memory(epochs: pd.DataFrame, table: pd.DataFrame) -> Figure | None:
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


# add a figure: write a function (epochs, per-batch table) -> Figure | None and list it here
FIGURES: list[Callable[[pd.DataFrame, pd.DataFrame], Figure | None]] = [accuracy_vs_epoch, time_per_image, peak_memory]


def render_all(epochs: pd.DataFrame, table: pd.DataFrame) -> list[Figure]:
    return [fig for make in FIGURES if (fig := make(epochs, table)) is not None]
