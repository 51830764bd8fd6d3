"""Where a validation curve crosses the target: the steps to target the report decides by.

"The first check at or above the target" depends on how often one looks: a noisy curve has early
upward fluctuations, and denser checks catch more of them. This estimator uses every check near
the crossing: a straight line of validation accuracy against log steps, fitted by least squares
to the checks within a factor WIDTH either side of the current guess, and the step where that line
reaches the target; it starts from the first check at or above the target and refits around each
new guess (ITERATIONS times). Where the window holds fewer than 3 checks or the line does not rise,
the first check stands. On runs checked at the log and a dense schedule at once
(tests/benchmarks/schedule_robustness.py, results/schedule-robustness/) the two readings were at
most 4% apart on MNIST and 13% on Fashion-MNIST, where the first check was 22% and 61% apart; a
line through a curved stretch reads a little late (+6% on a synthetic curve with a known
crossing); a monotone (isotonic) fit, tried first, moved by up to 57%. On a flat, noisy curve no
reading of one run is sharper than its checks allow (Fashion-MNIST's dense checks split in two
halves read up to 14% apart), so the crossing carries its standard error from the checks' scatter
about the line: it accounted for the log/dense gaps above (|z| <= 1.645 at 11 of 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WIDTH = 2.0  # the window: checks from guess / WIDTH to guess x WIDTH
ITERATIONS = 2


@dataclass(frozen=True)
class Crossing:
    steps: float  # the estimate
    before: float  # the last check before it (0 before the first check)
    after: float  # the first check at or after it
    first_check: float  # the first check at or above the target (moves with the schedule)
    log_se: float | None = None  # standard error of log(steps) from the checks' scatter about the line


def _line(log_steps: np.ndarray, accuracy: np.ndarray, target: float) -> tuple[float, float] | None:
    """Where a least-squares line through the checks reaches `target`, as (log steps, its standard
    error): the inverse-prediction error of a calibration line, s sqrt(1/n + (x0 - mean)^2 / Sxx) /
    slope, from the residuals' s with n - 2 degrees of freedom. None where the line does not rise."""
    slope, intercept = np.polyfit(log_steps, accuracy, 1)
    if not slope > 0:
        return None
    at = (target - intercept) / slope
    n = len(log_steps)
    spread = float(np.sum((accuracy - intercept - slope * log_steps) ** 2)) / (n - 2) if n > 2 else 0.0
    sxx = float(np.sum((log_steps - log_steps.mean()) ** 2))
    return at, math.sqrt(spread * (1 / n + (at - log_steps.mean()) ** 2 / sxx)) / slope


def crossing(steps: np.ndarray, accuracy: np.ndarray, target: float, fit: bool = True) -> Crossing | None:
    """The crossing of `target` by checks (`steps` increasing, > 0); None if no check reached it.
    `fit=False`: the first check at or above the target."""
    steps, accuracy = np.asarray(steps, float), np.asarray(accuracy, float)
    keep = np.isfinite(accuracy) & (steps > 0)
    steps, accuracy = steps[keep], accuracy[keep]
    above = np.nonzero(accuracy >= target)[0]
    if len(above) == 0:
        return None
    first = guess = float(steps[above[0]])
    log_se = None
    for _ in range(ITERATIONS if fit else 0):
        window = (steps >= guess / WIDTH) & (steps <= guess * WIDTH)
        if window.sum() < 3:
            break
        line = _line(np.log(steps[window]), accuracy[window], target)
        if line is None:
            guess, log_se = first, None
            break
        # a nearly flat line reaches the target far away (exp of it may overflow): kept in the window
        low, high = steps[window].min(), steps[window].max()
        guess = float(np.clip(math.exp(min(line[0], math.log(high))), low, high))
        log_se = line[1]
    before, after = checks_around(steps, guess)
    return Crossing(steps=guess, before=before, after=after, first_check=first, log_se=log_se)


def checks_around(steps: np.ndarray, at: float) -> tuple[float, float]:
    """The last check before `at` (0 before the first check) and the first at or after it (`at`
    no later than the last check)."""
    before = steps[steps < at]
    return float(before[-1]) if len(before) else 0.0, float(steps[steps >= at][0])


def settled(steps: np.ndarray, accuracy: np.ndarray, target: float) -> tuple[Crossing | None, bool]:
    """The crossing read from the checks so far, and whether later checks can no longer move it:
    the checks reach WIDTH x the estimate, the end of the window it is read from. A run that stops
    there reads what a run to the end reads (harness predict's short runs do)."""
    found = crossing(steps, accuracy, target)
    return found, found is not None and float(np.max(steps)) >= WIDTH * found.steps
