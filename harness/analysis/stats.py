"""How sure is the sweet spot? Intervals, win shares and ties from one set of draws per batch size.

What is estimated: a batch size's mean time to target over seeds, each seed's time read by the
report's rule (steps to target where the line through the checks around it reaches the target,
analysis/crossing.py, x that cell's seconds per step). Per batch size, from its seeds' times T_i:
- with n >= 2 seeds, Student's t on log T_i: their mean, standard error s / sqrt(n), n - 1 degrees
  of freedom. This is the small-sample correction: with 2 seeds the 95th percentile of t is 6.31
  standard errors, not 1.645, because s itself is guessed from 2 numbers. Each seed's crossing
  error and timing noise are inside the seeds' spread, so they are not added again;
- with one seed, normal on log T: the crossing's standard error (its checks' scatter about the
  line) and the standard error of the cell's mean seconds per step from its timing windows
  (neighbouring windows counted as partly the same, by their autocorrelation).
  Seed-to-seed variation, which one seed cannot show, is not in it (the report says so);
- a reading at the first check at the target (epoch ends, or too few checks to fit a line) only
  says the crossing lies between the check before it and it: that span is drawn uniformly, the
  same for every seed (they share the schedule).
RESAMPLES draws of each batch size's mean time follow that distribution, independently across
batch sizes: the 90% interval is their 5th to 95th percentile. The seeds' mean accuracy is drawn
the same way (t on the accuracies; one seed: as measured). A batch size stays eligible when in at
least TIE_SHARE of the draws it is within `tolerance` of the most accurate batch size (seed noise
alone drops none) and every seed reached the target; its win share is the share of draws in
which it is the fastest of the eligible. Another batch size is tied with the winner when it is
no slower in at least TIE_SHARE of the draws: a one-sided 5% test that it is slower does not
reject. tests/benchmarks/grid_coverage.py measures the coverage on synthetic grids with a known
truth and on seed subsets of a committed 9-seed grid (docs/measurement.md).
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
    """What the draws are made from, for one cell."""

    accuracy: float
    reached: bool
    time: float = math.nan  # its time to target (s): steps to target x seconds per step
    steps_low: float = math.nan  # the check before the crossing (0 if none)
    steps_high: float = math.nan  # the check at or after it
    log_se: float = 0.0  # standard error of log steps to target (0: not fitted, read at a check)
    rates: np.ndarray = field(default_factory=lambda: np.array([]))  # seconds per step of each timing window
    weights: np.ndarray = field(default_factory=lambda: np.array([]))  # steps in each window


@dataclass
class Draws:
    """Draws of each batch size's mean time to target and mean accuracy (draws x batches)."""

    batches: list[int]
    times: np.ndarray  # nan for a batch size where not every seed reached the target
    accuracies: np.ndarray
    share: dict[int, float] = field(default_factory=dict)  # win share among the eligible
    eligible: list[int] = field(default_factory=list)


def draw(by_batch: dict[int, list[CellSample]], tolerance: float, resamples: int = RESAMPLES,
         seed: int = 0) -> Draws:
    """The draws for every batch size, which of them stay eligible, and their win shares."""
    rng = np.random.default_rng(seed)
    batches = sorted(by_batch)
    times = np.full((resamples, len(batches)), np.nan)
    accuracies = np.full((resamples, len(batches)), np.nan)
    for j, batch in enumerate(batches):
        cells = by_batch[batch]
        accuracies[:, j] = _mean_draws(np.array([c.accuracy for c in cells]), resamples, rng)
        if all(c.reached for c in cells):
            times[:, j] = _time_draws(cells, resamples, rng)
    draws = Draws(batches=batches, times=times, accuracies=accuracies)
    draws.eligible = [b for b in batches if accuracy_noise_keeps(draws, b, tolerance)
                     and not np.isnan(times[0, batches.index(b)])]
    draws.share = win_shares(draws, draws.eligible)
    return draws


def _mean_draws(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of the mean of `values` (one per seed): mean + s / sqrt(n) x Student's t with n - 1
    degrees of freedom; one value is taken as it is."""
    n = len(values)
    if n < 2:
        return np.full(resamples, float(values[0]))
    return values.mean() + values.std(ddof=1) / math.sqrt(n) * rng.standard_t(n - 1, resamples)


def _time_draws(cells: list[CellSample], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of a batch size's mean time to target (module docstring)."""
    y = np.log([c.time for c in cells])
    if len(cells) > 1:
        log_mean = _mean_draws(y, resamples, rng)
    else:
        spread = math.hypot(cells[0].log_se, _timing_se(cells[0]))
        log_mean = y[0] + spread * rng.standard_normal(resamples)
    # a crossing read at a check lies between the check before and it, the same span for every seed
    span = np.mean([c.steps_low / c.steps_high if c.log_se == 0 and c.steps_high > 0 else 1.0 for c in cells])
    # clipped at 10x either way: no draw overflows (a finite, very wide interval says the same)
    log_mean = np.clip(log_mean, y.min() - LOG_TEN, y.max() + LOG_TEN)
    return np.exp(log_mean) * (rng.uniform(span, 1.0, resamples) if span < 1 else 1.0)


LOG_TEN = float(np.log(10.0))


def _timing_se(cell: CellSample) -> float:
    """Standard error of the log of a cell's mean seconds per step, from its timing windows in the
    order they ran. Neighbouring windows share the machine's moods (a load burst spans several), so
    the windows count as k (1 - r) / (1 + r) independent ones, r their lag-1 autocorrelation."""
    k = len(cell.rates)
    if k < 2:
        return 0.0
    logs, w = np.log(cell.rates), cell.weights / cell.weights.sum()
    centred = logs - float(np.sum(w * logs))
    variance = float(np.sum(w * centred**2)) * k / (k - 1)
    if not variance > 0:
        return 0.0
    r = float(np.clip(np.sum(centred[1:] * centred[:-1]) / np.sum(centred**2), 0.0, 0.99)) if k > 2 else 0.0
    return math.sqrt(variance / max(1.0, k * (1 - r) / (1 + r)))


def near_best(accuracy, best, tolerance: float):
    """The tolerance rule, for a number, an array or a Series: within `tolerance` of the best
    (a hair of slack, so a value exactly `tolerance` below counts despite float rounding)."""
    return accuracy >= best - tolerance - 1e-12


def win_shares(draws: Draws, eligible: list[int]) -> dict[int, float]:
    """Per batch size, the share of draws in which it has the shortest time of the eligible ones
    (0 for the others; equal times go to the smaller batch)."""
    share = dict.fromkeys(draws.batches, 0.0)
    if not eligible:
        return share
    columns = draws.times[:, [draws.batches.index(b) for b in eligible]]
    winners = np.argmin(columns, axis=1)  # eligible are in increasing batch order: ties to the smaller
    for k, batch in enumerate(eligible):
        share[batch] = float(np.mean(winners == k))
    return share


def interval(draws: Draws, batch: int) -> tuple[float | None, float | None]:
    """The 90% interval of a batch size's mean time to target (None where not every seed reached it)."""
    column = draws.times[:, draws.batches.index(batch)]
    if np.isnan(column).any():
        return None, None
    low, high = np.quantile(column, [TIE_SHARE, 1 - TIE_SHARE])
    return float(low), float(high)


def accuracy_noise_keeps(draws: Draws, batch: int, tolerance: float) -> bool:
    """Whether the batch size is within `tolerance` of the most accurate batch size (by its mean) in
    at least TIE_SHARE of the draws: not dropped for a difference smaller than seed noise."""
    centres = np.median(draws.accuracies, axis=0)  # the seeds' mean accuracy (t's draws are centred on it)
    best = draws.accuracies[:, int(np.argmax(centres))]
    return float(np.mean(near_best(draws.accuracies[:, draws.batches.index(batch)], best, tolerance))) >= TIE_SHARE


def tied_with(draws: Draws, winner: int, candidates: list[int]) -> list[int]:
    """Candidates that reach the target no later than the winner in at least TIE_SHARE of the
    draws (a one-sided 5% test that they are slower does not reject)."""
    w = draws.times[:, draws.batches.index(winner)]
    tied = []
    for batch in candidates:
        t = draws.times[:, draws.batches.index(batch)]
        if batch != winner and not np.isnan(t).any() and float(np.mean(t <= w)) >= TIE_SHARE:
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


def geometric_interval(values) -> tuple[float | None, float | None, float | None]:
    """Over seeds: the geometric mean of the positive finite values and the 95% Student's t interval
    of their logs (n - 1 degrees of freedom); None where there is none, no interval below 2 values."""
    logs = np.log([v for v in values if v is not None and np.isfinite(v) and v > 0])
    if not len(logs):
        return None, None, None
    mean = float(np.exp(logs.mean()))
    if len(logs) < 2:
        return mean, None, None
    half = t_quantile(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    return mean, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))


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
