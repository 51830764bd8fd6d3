"""The collapse section's figure: one collapsed cell's curves, a panel per kind of diagnostic."""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import MaxNLocator

from harness.report.figures import Figure, _encode, _grid

COLLAPSE_PANELS = [
    ("accuracy", ["train_accuracy", "val_accuracy", "test_accuracy"], "linear"),
    ("gradient norm (mean over steps; dashed: max)", "grad_norm_mean", "log"),
    ("largest update / weights", "update_ratio_max", "log"),
    ("dead units (hidden layers)", "dead_fraction", "linear"),
    ("Adam sqrt(v): median (dashed: min; 0 not drawn)", "adam_sqrt_v_median", "log"),
    ("gradient noise scale B_simple", ["noise_scale"], "log"),
]
PARTNER = {"grad_norm_mean": "grad_norm_max", "adam_sqrt_v_median": "adam_sqrt_v_min"}


def collapse_curves(cell: pd.DataFrame, title: str, peak_epoch: int) -> Figure:
    """One collapsed cell: accuracies, gradient and update norms, dead units, Adam state, B_simple.
    A panel whose numbers were not recorded (per-step norms switched off) is left out."""
    panels = []
    for name, columns, yscale in COLLAPSE_PANELS:
        prefix = columns if isinstance(columns, str) else ""
        names = sorted(c for c in cell if c.startswith(prefix + "_l")) if prefix else columns
        recorded = [c for c in names if c in cell and cell[c].notna().any()]
        if recorded:
            panels.append((name, prefix, recorded, yscale))
    fig, axes = _grid(len(panels))
    for ax, (name, prefix, columns, yscale) in zip(axes, panels):
        for column in columns:  # epochs not measured (B_simple beyond its budget) are skipped, not gaps
            measured = cell[cell[column].notna()]
            line, = ax.plot(measured["epoch"], measured[column], marker=".", label=column.removeprefix(prefix + "_"))
            if prefix in PARTNER:
                ax.plot(measured["epoch"], measured[column.replace(prefix, PARTNER[prefix])], "--",
                        color=line.get_color())
        ax.axvline(peak_epoch, color="red", linewidth=1, alpha=0.6)
        ax.set(title=name, xlabel="epoch", yscale=yscale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    return Figure(f"Collapse of {title}", "The red line is the epoch of peak test accuracy. Overfitting shows train "
                  "accuracy rising while held-out accuracy falls; instability shows growing updates and shrinking "
                  "sqrt(v); dead units show a rising dead fraction.", _encode(fig), cell)
