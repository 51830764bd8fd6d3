"""Steps to target as a function of batch size: McCandlish et al. 2018, "An empirical model of
large-batch training": S(B) = S_min (1 + B_noise / B), equivalently (S/S_min - 1)(E/E_min - 1) = 1
with E = B S images. Below B_noise doubling the batch nearly halves the steps (perfect scaling);
above it the steps flatten towards S_min (Shallue et al.'s diminishing returns and maximal data
parallelism). S is linear in 1/B, so two or three batch sizes far apart fix both parameters.

How sure the fit is. Seed-to-seed noise multiplies steps to target (±20-40% on one MNIST run), so
the fit is least squares of log S = log(S_min + S_min B_noise / B), and its intervals are
Student-t intervals from the residuals, with n - 2 degrees of freedom: with 2 seeds at 3 batch
sizes (4 degrees of freedom) t_0.95 is 2.13, with one seed each (1) it is 6.31. That covers the
truth when the model holds. Outside the batch sizes measured the model may not hold (at a fixed
rate small batches need more steps than 1/B; a rule that raises the rate keeps cutting steps past
S_min), so a misfit term adds MISFIT_PER_OCTAVE x (octaves beyond the measured span) in log steps,
or more where leaving out an end batch size and predicting it from the others misses by more.
Coverage on synthetic steps and on the committed grids: docs/predict.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from harness.analysis.stats import LEVEL, t_quantile

# Log-steps error per octave of extrapolation, a prior: leaving the ends (8, 2048) out of grids
# 8..2048 not used to test it (default_seeds, lr_tuned, val-split, gpu-h200) and predicting them
# from 32, 128 and 512 missed by 0.03-0.25 per octave (rms 0.17)
MISFIT_PER_OCTAVE = 0.15


@dataclass(frozen=True)
class StepsFit:
    s_min: float  # steps to target with an infinite batch
    b_noise: float  # the batch size where S is twice S_min: the turn between the regimes
    points: int
    residual_var: float = math.nan  # of log steps about the fit (seed noise and misfit at the points)
    dof: int = 0
    cov: tuple[tuple[float, float], tuple[float, float]] | None = None  # of (a, b) in S = a + b/B, / residual_var
    span: tuple[float, float] = (math.nan, math.nan)  # the smallest and largest batch size fitted
    misfit_per_octave: float = MISFIT_PER_OCTAVE

    def steps(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.s_min * (1 + self.b_noise / np.asarray(batch, dtype=float))

    def log_sd(self, batch: np.ndarray | float, new_seeds: int | None = None) -> np.ndarray:
        """The standard error of log S(B): the fit's, the misfit beyond the span, and with
        `new_seeds` the noise of a mean over that many new seeds (what a grid will measure)."""
        batch = np.atleast_1d(np.asarray(batch, dtype=float))
        if self.cov is None or not np.isfinite(self.residual_var):
            return np.full(batch.shape, np.inf)
        gradient = np.stack([np.ones_like(batch), 1 / batch], axis=1) / self.steps(batch)[:, None]
        var = np.einsum("ij,jk,ik->i", gradient, np.asarray(self.cov), gradient) * self.residual_var
        var = var + (self.misfit_per_octave * self.octaves_outside(batch)) ** 2
        if new_seeds:
            var = var + self.residual_var / new_seeds
        return np.sqrt(var)

    def octaves_outside(self, batch: np.ndarray) -> np.ndarray:
        low, high = self.span
        return np.maximum(0, np.maximum(np.log2(low / batch), np.log2(batch / high)))

    def interval(self, batch: np.ndarray | float, new_seeds: int | None = None,
                 level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """A `level` interval for the steps to target at `batch` (their mean over seeds), or with
        `new_seeds` for the mean a grid of that many seeds will measure."""
        spread = t_quantile(0.5 + level / 2, self.dof) * self.log_sd(batch, new_seeds)
        middle = np.atleast_1d(self.steps(batch))
        return middle * np.exp(-spread), middle * np.exp(spread)


def fit_steps(batches: np.ndarray, steps: np.ndarray, misfit_prior: float = MISFIT_PER_OCTAVE) -> StepsFit | None:
    """Least squares of log S = log(a + b / B) (Gauss-Newton from the fit in relative error), so
    batch 8's thousands of steps do not drown batch 2048's hundred; None when fewer than two
    distinct batch sizes or when the fit is not physical (a or b not positive: no regime change)."""
    batches, steps = np.asarray(batches, dtype=float), np.asarray(steps, dtype=float)
    keep = np.isfinite(batches) & np.isfinite(steps) & (steps > 0)
    batches, steps = batches[keep], steps[keep]
    if len(np.unique(batches)) < 2:
        return None
    theta = _log_least_squares(batches, steps)
    if theta is None:
        return None
    a, b = theta
    fitted = a + b / batches
    jacobian = np.stack([np.ones_like(batches), 1 / batches], axis=1) / fitted[:, None]
    residuals = np.log(steps / fitted)
    dof = len(steps) - 2
    left_out = [leave_one_out(batches, steps, end, misfit_prior=0.0) for end in (batches.min(), batches.max())]
    return StepsFit(s_min=float(a), b_noise=float(b / a), points=len(steps),
                    residual_var=float(residuals @ residuals / dof) if dof > 0 else math.nan, dof=dof,
                    cov=tuple(map(tuple, np.linalg.inv(jacobian.T @ jacobian).tolist())),
                    span=(float(batches.min()), float(batches.max())),
                    misfit_per_octave=max([misfit_prior, *(err for err in left_out if err is not None)]))


def _log_least_squares(batches: np.ndarray, steps: np.ndarray) -> tuple[float, float] | None:
    design = np.stack([np.ones_like(batches), 1 / batches], axis=1) / steps[:, None]
    theta, *_ = np.linalg.lstsq(design, np.ones_like(steps), rcond=None)
    for _ in range(50):
        if not (theta[0] > 0 and theta[1] > 0):
            return None
        fitted = theta[0] + theta[1] / batches
        jacobian = np.stack([np.ones_like(batches), 1 / batches], axis=1) / fitted[:, None]
        step, *_ = np.linalg.lstsq(jacobian, np.log(steps / fitted), rcond=None)
        theta = theta + step
        if np.max(np.abs(step / theta)) < 1e-10:
            break
    return (float(theta[0]), float(theta[1])) if theta[0] > 0 and theta[1] > 0 else None


def _fitted_without(batches: np.ndarray, steps: np.ndarray, left_out: list[float],
                    misfit_prior: float) -> Iterator[tuple[float, StepsFit, np.ndarray]]:
    """For each batch size in `left_out`: (it, the fit of the others, its own steps), where the
    others can be fitted and their seed noise estimated."""
    for batch in left_out:
        others = batches != batch
        fit = fit_steps(batches[others], steps[others], misfit_prior) if len(np.unique(batches[others])) >= 2 else None
        if fit is not None and np.isfinite(fit.residual_var):
            yield batch, fit, steps[~others]


def leave_one_out(batches: np.ndarray, steps: np.ndarray, batch: float, misfit_prior: float) -> float | None:
    """Misfit per octave at an end batch size: fit the others, predict its mean log steps, and
    return the miss beyond what the seed noise explains, per octave to the nearest batch size
    fitted. None where the others cannot be fitted or the noise not estimated."""
    for _, fit, here in _fitted_without(batches, steps, [batch], misfit_prior):
        miss = float(np.mean(np.log(here)) - np.log(fit.steps(batch)))
        noise = float(fit.log_sd(batch, new_seeds=len(here))[0]) ** 2 - (misfit_prior * fit.octaves_outside(
            np.array([batch]))[0]) ** 2
        octaves = float(np.min(np.abs(np.log2(batches[batches != batch] / batch))))
        return math.sqrt(max(0.0, miss * miss - noise)) / octaves
    return None


def left_out_misses(batches: np.ndarray, steps: np.ndarray, level: float = LEVEL) -> list[dict]:
    """Each batch size fitted, left out in turn: the others' fit and its interval for the mean of
    its seeds. The ones measured outside that interval: the model does not describe them. Each
    interval is at 1 - (1 - level) / k for k batch sizes (Bonferroni), so that a model that holds
    is doubted in at most 1 - level of predictions, not in one of three tests at 10% each."""
    batches, steps = np.asarray(batches, dtype=float), np.asarray(steps, dtype=float)
    level = 1 - (1 - level) / max(1, len(np.unique(batches)))
    misses = []
    for batch, fit, here in _fitted_without(batches, steps, list(np.unique(batches)), MISFIT_PER_OCTAVE):
        low, high = (float(v[0]) for v in fit.interval(batch, new_seeds=len(here), level=level))
        measured = float(np.exp(np.mean(np.log(here))))
        if not low <= measured <= high:
            misses.append({"batch_size": int(batch), "measured": measured, "predicted": float(fit.steps(batch)),
                           "interval": [low, high], "level": level})
    return misses
