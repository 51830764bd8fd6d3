"""Steps to target as a function of batch size: McCandlish et al. 2018, "An empirical model of
large-batch training": S(B) = S_min (1 + B_noise / B), equivalently (S/S_min - 1)(E/E_min - 1) = 1
with E = B S images. Below B_noise doubling the batch nearly halves the steps (perfect scaling);
above it the steps flatten towards S_min (Shallue et al.'s diminishing returns and maximal data
parallelism). S is linear in 1/B, so two or three batch sizes far apart fix both parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepsFit:
    s_min: float  # steps to target with an infinite batch
    b_noise: float  # the batch size where S is twice S_min: the turn between the regimes
    points: int

    def steps(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.s_min * (1 + self.b_noise / np.asarray(batch, dtype=float))


def fit_steps(batches: np.ndarray, steps: np.ndarray) -> StepsFit | None:
    """Least squares of S = a + b / B in relative error (each point weighted by 1/S, so batch 8's
    thousands of steps do not drown batch 2048's hundred); None when fewer than two distinct batch
    sizes or when the fit is not physical (a or b not positive: no regime change in the data)."""
    batches, steps = np.asarray(batches, dtype=float), np.asarray(steps, dtype=float)
    keep = np.isfinite(batches) & np.isfinite(steps) & (steps > 0)
    batches, steps = batches[keep], steps[keep]
    if len(np.unique(batches)) < 2:
        return None
    design = np.stack([np.ones_like(batches), 1 / batches], axis=1) / steps[:, None]
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(steps), rcond=None)
    if not (a > 0 and b > 0):
        return None
    return StepsFit(s_min=float(a), b_noise=float(b / a), points=len(steps))
