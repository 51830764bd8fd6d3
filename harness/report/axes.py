"""Axis rules shared by the report's figures, so a small difference never looks like a cliff:
accuracy axes span at least ACCURACY_SPAN (in whole points), batch sizes are ticked where they ran,
log axes read as plain numbers. (Memory axes start at zero where they are drawn.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator

ACCURACY_SPAN = 0.05


def batch_axis(ax, sizes) -> None:
    """A log-2 batch-size axis ticked at the batch sizes run, as plain numbers."""
    sizes = sorted({int(s) for s in sizes})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("global batch size")


def _plain(value: float, _=None) -> str:
    return f"{value:,.0f}" if value >= 1 and value == int(value) else f"{value:.3g}"


class _PlainMinor(LogFormatter):
    """Matplotlib's choice of which minor ticks to label for the span drawn (all of them below half
    a decade, a few such as 2 and 5 below two decades, none above), written as plain numbers."""

    def __call__(self, value: float, pos=None) -> str:
        return _plain(value) if super().__call__(value, pos) else ""


def plain_log(axis) -> None:
    """Log-scale tick labels as plain numbers (20, 0.5, 10,000), not powers of ten, with as many
    minor ticks labelled as fit; which ones is decided when the figure is drawn, since markers
    added later (did not reach) widen the axis."""
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(_PlainMinor(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def accuracy_limits(ax, values) -> None:
    """Whole points, at least ACCURACY_SPAN apart, never above 1."""
    values = pd.Series(values).dropna()
    if values.empty:
        return
    high = min(1.0, np.ceil(values.max() * 100) / 100)
    low = max(0.0, min(np.floor(values.min() * 100) / 100, high - ACCURACY_SPAN))
    ax.set_ylim(low, high + 0.002)
