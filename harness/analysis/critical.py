"""The critical batch at one point of training, from branches (harness/prediction/branching.py), and
the batch schedule that follows it. Pure numbers: no torch.

McCandlish et al. (2018): to make a given progress, a batch B needs S = S_min (1 + B_crit / B) steps
and E = E_min (1 + B / B_crit) examples, so (S/S_min - 1)(E/E_min - 1) = 1. Branches from the same
weights each train the same examples, checked as they go; each is read at one common improvement of
the held-out loss (REACH of the least any branch made), which gives E(B), a line in B: E = E_min +
(E_min / B_crit) B. B_crit is its intercept over its slope (least squares). Its interval comes from
the seeds (each seed a base run and its branches): a t-interval of log B_crit over them, or with one
seed the fit's own (the delta method on intercept / slope, t with n - 2 degrees of freedom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.analysis.stats import geometric_interval, t_quantile

REACH = 0.7  # the common progress: this share of the smallest improvement any branch made by its end
BEYOND = 4  # a B_crit further than this factor outside the branch batches is given as a bound


@dataclass(frozen=True)
class PointFit:
    b_crit: float | None  # None where the fit has no finite positive ratio (see `bound`)
    bound: str | None  # "above B" (examples needed did not grow with B), "below B", or why no fit
    low: float | None = None  # the one-seed fit's 95% interval (delta method)
    high: float | None = None
    target: float | None = None  # the held-out loss improvement every branch is read at
    examples_needed: dict[int, float] | None = None  # E(B): examples to make it, per branch batch
    e_over_e_min: dict[int, float] | None = None  # E/E_min per branch batch (from the fit's E_min)
    s_over_s_min: dict[int, float] | None = None  # S/S_min


def examples_to(curve: list[tuple[int, float]], target: float) -> float | None:
    """The examples at which a branch's improvement (its best so far) first reaches `target`,
    linear between checks; from (0, 0)."""
    points, best = [(0, 0.0)], 0.0
    for examples, gain in curve:
        best = max(best, gain)
        points.append((examples, best))
    for (e0, g0), (e1, g1) in zip(points, points[1:]):
        if g1 >= target:
            return e0 + (e1 - e0) * (target - g0) / (g1 - g0) if g1 > g0 else float(e0)
    return None


def fit_point(curves: dict[int, list[tuple[int, float]]]) -> PointFit:
    """B_crit from branches at one point: per batch size, its held-out loss improvement after each
    number of examples (all branches train the same examples). E(B), the examples each needs for a
    common improvement, is fitted as E = E_min + (E_min / B_crit) B (McCandlish's relation)."""
    finals = {b: max((g for _, g in c), default=0.0) for b, c in curves.items()}
    kept = {b: c for b, c in curves.items() if finals[b] > 0}
    if len(kept) < 3:
        return PointFit(None, f"{len(kept)} of {len(curves)} branches improved the held-out loss; need 3")
    target = REACH * min(finals[b] for b in kept)
    needed = {b: examples_to(c, target) for b, c in kept.items()}
    x = np.array(sorted(needed), float)
    y = np.array([needed[int(b)] for b in x])
    design = np.column_stack([np.ones_like(x), x])
    (a, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    crit = float(a / slope) if slope > 0 and a > 0 else None
    if slope <= 0 or (crit is not None and crit > BEYOND * x.max()):  # no curve in what the branches show
        return PointFit(None, f"above {int(BEYOND * x.max())}", target=target, examples_needed=needed)
    if a <= 0 or crit < x.min() / BEYOND:
        return PointFit(None, f"below {int(x.min() / BEYOND)}", target=target, examples_needed=needed)
    low = high = None
    if len(x) > 2:
        residual = y - design @ np.array([a, slope])
        cov = float(residual @ residual) / (len(x) - 2) * np.linalg.inv(design.T @ design)
        grad = np.array([1 / slope, -a / slope**2])
        half = t_quantile(0.975, len(x) - 2) * math.sqrt(max(float(grad @ cov @ grad), 0.0))
        low, high = max(crit - half, 0.0), crit + half
    e_ratio = {b: float(e / a) for b, e in needed.items()}
    return PointFit(crit, None, low=low, high=high, target=float(target),
                    examples_needed={b: float(e) for b, e in needed.items()}, e_over_e_min=e_ratio,
                    s_over_s_min={b: float(e / b / slope) for b, e in needed.items()})


def across_seeds(values: list[float | None]) -> dict[str, float | int | None]:
    """B_crit at one point over seeds: the geometric mean and a 95% t-interval of log B_crit; `fitted`
    of `seeds` gave a value."""
    mean, low, high = geometric_interval(values)
    return {"seeds": len(values), "fitted": sum(v is not None and v > 0 for v in values), "b_crit": mean,
            "low": low, "high": high}


def gain(b_crit: float, old: int, new: int, seconds_per_example: dict[int, float]) -> float:
    """The predicted share of time saved per unit of progress by training at `new` instead of `old`:
    time = E_min (1 + B / B_crit) x seconds per example at B."""
    cost = lambda b: (1 + b / b_crit) * seconds_per_example[b]  # noqa: E731
    return 1 - cost(new) / cost(old)


def propose(points: list[tuple[int, float | None]], start: int, candidates: list[int],
            seconds_per_example: dict[int, float], threshold: float = 0.05) -> list[list[int]]:
    """A batch schedule [[examples, batch], ...] from B_crit at points given in examples seen: at each
    point, the candidate (an integer multiple of the batch in use, never smaller) that minimises the
    predicted time per unit of progress; a switch only where it saves at least `threshold` of it."""
    schedule, batch = [[0, start]], start
    for examples, b_crit in points:
        if b_crit is None:
            continue
        larger = [b for b in candidates if b > batch and b % batch == 0 and b in seconds_per_example]
        if not larger or batch not in seconds_per_example:
            continue
        best = max(larger, key=lambda b: gain(b_crit, batch, b, seconds_per_example))
        if gain(b_crit, batch, best, seconds_per_example) >= threshold:
            schedule.append([int(examples), best])
            batch = best
    return schedule
