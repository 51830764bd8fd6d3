"""Where a validation curve crosses the target, read so that the check schedule does not move it.

"The first check at or above the target" depends on how often one looks: a noisy curve has early
upward fluctuations, and denser checks catch more of them. On MNIST (Adam 1e-3, 0.97) the log
schedule read ~1.15x the steps a check every ~1,000 images read on the same runs. The estimator
here uses every check: a monotone (isotonic, pool-adjacent-violators) fit of validation accuracy
against log steps, up to the run's best check, and the first step where that fit reaches the
target, interpolated linearly in log step between the two fitted checks around it. A lucky spike
is pooled with the checks after it, so it no longer decides alone. The crossing is bracketed by
those two checks: the resolution the bootstrap draws within.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Crossing:
    steps: float  # the estimate
    before: float  # the check before it (0 before the first check)
    after: float  # the check at or after it


def isotonic(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in squared error (pool adjacent violators)."""
    means: list[float] = []
    sizes: list[int] = []
    for value in values:
        means.append(float(value))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = means[-2] * sizes[-2] + means[-1] * sizes[-1]
            sizes[-2] += sizes[-1]
            means[-2] = total / sizes[-2]
            means.pop()
            sizes.pop()
    return np.repeat(means, sizes)


def crossing(steps: np.ndarray, accuracy: np.ndarray, target: float) -> Crossing | None:
    """The isotonic crossing of `target` by checks (`steps` increasing, > 0); None if never."""
    steps, accuracy = np.asarray(steps, float), np.asarray(accuracy, float)
    keep = np.isfinite(accuracy)
    steps, accuracy = steps[keep], accuracy[keep]
    if len(steps) == 0 or not accuracy.max() >= target:
        return None
    peak = int(np.argmax(accuracy))  # after the best check the curve may fall (overfitting, a collapse)
    fitted = isotonic(accuracy[: peak + 1])
    i = int(np.argmax(fitted >= target))
    if i == 0:
        return Crossing(float(steps[0]), 0.0, float(steps[0]))
    low, high = fitted[i - 1], fitted[i]
    share = (target - low) / (high - low) if high > low else 1.0
    log_step = math.log(steps[i - 1]) + share * (math.log(steps[i]) - math.log(steps[i - 1]))
    return Crossing(math.exp(log_step), float(steps[i - 1]), float(steps[i]))
