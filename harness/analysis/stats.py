"""How sure is the sweet spot? A bootstrap over seeds, timing windows and check resolution.

One resample redraws, for every batch size, its seeds with replacement (one seed: that seed), and
for every drawn cell
- where the target was crossed: uniformly between the two checks around the fitted crossing
  (analysis/crossing.py), the resolution the checks allowed; with one seed also lognormally with
  the crossing's standard error (its checks' scatter about the line), the one run-to-run noise
  one seed shows (with several seeds their spread already holds it);
- its time per step: the rate of one timed window of that cell, drawn with weights = the window's
  steps (run-to-run and window-to-window speed, measured within the cell: load, clocks).
Time to target = steps x time per step, averaged over the drawn seeds. Accuracy is the drawn seeds'
mean. In each resample the rule picks a winner (shortest time among batch sizes within `tolerance`
of the best accuracy, every drawn seed at the target): the share of resamples each batch size wins
is its win share. Two batch sizes are tied when, paired resample by resample, the slower one is no
slower in at least TIE_SHARE of the resamples: the 90% interval of their time ratio includes 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 2000
LEVEL = 0.90  # two-sided intervals: the 5th and 95th percentiles
TIE_SHARE = (1 - LEVEL) / 2


@dataclass(frozen=True)
class CellSample:
    """What a resample may draw from one cell."""

    accuracy: float
    reached: bool
    steps_low: float  # the check before the crossing (0 if none)
    steps_high: float  # the check at or after it
    rates: np.ndarray  # seconds per step of each timed window
    weights: np.ndarray  # steps in each window
    log_se: float = 0.0  # standard error of log steps to target (0: none known)


@dataclass
class Bootstrap:
    batches: list[int]
    times: np.ndarray  # resamples x batches: mean time to target (nan where a drawn seed missed it)
    accuracies: np.ndarray  # resamples x batches
    winners: np.ndarray  # resamples: the winning batch size (0: no winner)
    share: dict[int, float] = field(default_factory=dict)


def resample(by_batch: dict[int, list[CellSample]], tolerance: float, resamples: int = RESAMPLES,
             seed: int = 0) -> Bootstrap:
    rng = np.random.default_rng(seed)
    batches = sorted(by_batch)
    times = np.full((resamples, len(batches)), np.nan)
    accuracies = np.full((resamples, len(batches)), np.nan)
    for j, batch in enumerate(batches):
        cells = by_batch[batch]
        n = len(cells)
        # resample x drawn seed -> cell index; one seed is kept as it is (no seed noise to draw)
        drawn = rng.integers(n, size=(resamples, n)) if n > 1 else np.zeros((resamples, 1), dtype=int)
        per_cell = np.stack([_times(c, resamples, rng, fit_noise=n == 1) for c in cells])  # cells x resamples
        accuracy = np.array([c.accuracy for c in cells])
        reached = np.array([c.reached for c in cells])
        accuracies[:, j] = accuracy[drawn].mean(axis=1)
        cell_times = per_cell[drawn, np.arange(resamples)[:, None]]
        times[:, j] = np.where(reached[drawn].all(axis=1), cell_times.mean(axis=1), np.nan)
    winners = np.array([_winner(batches, t, a, tolerance) for t, a in zip(times, accuracies)])
    share = {b: float(np.mean(winners == b)) for b in batches}
    return Bootstrap(batches=batches, times=times, accuracies=accuracies, winners=winners, share=share)


LOG_TEN = float(np.log(10.0))


def _times(cell: CellSample, resamples: int, rng: np.random.Generator, fit_noise: bool) -> np.ndarray:
    """`resamples` draws of the cell's time to target (nan if it never reached the target)."""
    if not cell.reached or not len(cell.rates):
        return np.full(resamples, np.nan)
    steps = rng.uniform(cell.steps_low, cell.steps_high, resamples) if cell.steps_high > cell.steps_low \
        else np.full(resamples, cell.steps_high)
    if fit_noise and cell.log_se > 0:
        # a crossing read from a few scattered checks may carry a huge error: at most 10x either way,
        # so that no draw overflows to an infinite time (a finite, wide interval says the same)
        steps = steps * np.exp(np.clip(rng.normal(0.0, cell.log_se, resamples), -LOG_TEN, LOG_TEN))
    rates = rng.choice(cell.rates, size=resamples, p=cell.weights / cell.weights.sum())
    return steps * rates


def near_best(accuracy, best, tolerance: float):
    """The tolerance rule, for a number, an array or a Series: within `tolerance` of the best
    (a hair of slack, so a value exactly `tolerance` below counts despite float rounding)."""
    return accuracy >= best - tolerance - 1e-12


def _winner(batches: list[int], times: np.ndarray, accuracies: np.ndarray, tolerance: float) -> int:
    ok = near_best(accuracies, np.nanmax(accuracies), tolerance) & ~np.isnan(times)
    if not ok.any():
        return 0
    return batches[int(np.nanargmin(np.where(ok, times, np.inf)))]


def interval(boot: Bootstrap, batch: int) -> tuple[float | None, float | None]:
    """The 90% interval of a batch size's time to target over the resamples where it reached it."""
    column = boot.times[:, boot.batches.index(batch)]
    column = column[~np.isnan(column)]
    if not len(column):
        return None, None
    low, high = np.quantile(column, [TIE_SHARE, 1 - TIE_SHARE])
    return float(low), float(high)


def accuracy_noise_keeps(boot: Bootstrap, batch: int, tolerance: float) -> bool:
    """Whether the batch size is within `tolerance` of the best accuracy in at least TIE_SHARE of
    the resamples: not dropped for a difference smaller than seed noise."""
    j = boot.batches.index(batch)
    best = np.nanmax(boot.accuracies, axis=1)
    return float(np.mean(near_best(boot.accuracies[:, j], best, tolerance))) >= TIE_SHARE


def tied_with(boot: Bootstrap, winner: int, candidates: list[int]) -> list[int]:
    """Candidates that reach the target no later than the winner in at least TIE_SHARE of the
    paired resamples (the 90% interval of time / winner's time includes 1)."""
    w = boot.times[:, boot.batches.index(winner)]
    tied = []
    for batch in candidates:
        if batch == winner:
            continue
        t = boot.times[:, boot.batches.index(batch)]
        both = ~np.isnan(t) & ~np.isnan(w)
        if both.any() and float(np.mean(t[both] <= w[both])) >= TIE_SHARE:
            tied.append(batch)
    return tied


# one-sided 5% test, 90% power: z_0.95 + z_0.90
Z_POWER = 1.6449 + 1.2816
MAX_SEEDS = 100


def seeds_needed(times_a: list[float], times_b: list[float]) -> int | None:
    """Seeds per batch size for a one-sided 5% test to tell two batch sizes' mean log time to
    target apart with 90% power, from their measured seed-to-seed spread: n = 2 (z_a + z_b)^2
    s^2 / d^2 (pooled variance s^2 of log times, d the difference of their means). None where it
    cannot be estimated (fewer than 2 seeds each, or no spread); MAX_SEEDS + 1 for "more than"."""
    a, b = np.log(np.asarray(times_a, float)), np.log(np.asarray(times_b, float))
    if len(a) < 2 or len(b) < 2:
        return None
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    gap = abs(a.mean() - b.mean())
    if not pooled > 0:
        return None
    if gap == 0:
        return MAX_SEEDS + 1
    return min(MAX_SEEDS + 1, max(2, int(np.ceil(2 * Z_POWER**2 * pooled / gap**2))))


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (scipy is not a dependency): bisection on the CDF, integrated from the
    density on a fine grid. Accurate to ~1e-4 for df >= 1, plenty for an interval's width."""
    if not df > 0:
        return math.inf
    x = np.linspace(0, 400 if df < 2 else 60, 400_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
    q = float(np.interp(max(p, 1 - p), cdf, x))
    return q if p >= 0.5 else -q
