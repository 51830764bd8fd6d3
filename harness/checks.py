"""When a cell checks its validation accuracy: a schedule in optimizer steps, a pure function.

Steps to target are read at these checks, so the spacing decides how exactly they are known. A
log-spaced schedule (`per_decade` checks per factor of 10 in steps, ratio r = 10**(1/per_decade),
each check the previous one times r, rounded down) bounds the gap between checks relative to where
it lies: wherever the target is crossed after `first_step`, the interval (previous check, this
check] spans at most r - 1 of its start (9.6% for 25 per decade, 8.8% of the step reported). A
fixed interval cannot do this for every batch size: at batch 8 the target lies ~7,000 steps in,
at batch 2048 ~100. Every epoch end is a check too, and no two checks lie more than `max_interval`
steps apart.

The schedule depends on the global step only, so 1 and P processes check at the same steps. A
check costs a pass over the validation split, which at small batches can cost more than the steps
between two checks (a 2-core CPU spent 31 s on checks against 126 s of training at batch 8). So a
scheduled check is skipped while the checks so far plus the next one and the last would exceed `checks.budget`
(default 25%) of the training time so far (`within_budget`); the cell's first and last checks
always run; `checks.budget: null` runs every scheduled check (a schedule to compare, a test that
needs identical checks on every run). Every
check that ran is in evals.csv, and the resolution the report states is the gap between the checks
that ran, so thinning costs resolution, never honesty. The decision reads times that every rank
shares (reduced over ranks), so all ranks skip the same checks.
"""

from __future__ import annotations

import math


def schedule(total_steps: int, steps_per_epoch: int, per_decade: int, first_step: int,
             max_interval: int | None = None, every: int | None = None,
             epoch_ends: tuple[int, ...] | None = None) -> list[int]:
    """The steps after which validation is checked: log-spaced from `first_step`, every epoch end,
    at least every `max_interval` steps (default: one epoch), and every `every` steps if given (a
    dense schedule beside the log one, to compare readings); sorted, within 1..total_steps.
    `epoch_ends`: where epochs end when they differ in steps (train.batch_schedule)."""
    ratio = 10 ** (1 / per_decade)
    cap = max_interval or steps_per_epoch
    steps = set(epoch_ends or range(steps_per_epoch, total_steps + 1, steps_per_epoch))
    steps |= set(range(every, total_steps + 1, every)) if every else set()
    step = first_step
    while step <= total_steps:
        steps.add(step)
        # rounded down, so no gap exceeds ratio - 1 of its start; at least one step, at most `cap`
        step = max(step + 1, min(math.floor(step * ratio + 1e-9), step + cap))
    return sorted(s for s in steps if 1 <= s <= total_steps)


def for_cell(settings, cfg) -> list[int]:
    """The schedule of one cell (CellSettings) under the sweep's `checks:` section (CheckSettings)."""
    every = max(1, round(cfg.every_images / settings.train.batch_size)) if cfg.every_images else None
    plan = settings.batch_plan
    return schedule(settings.total_steps, settings.steps_per_epoch, cfg.per_decade, cfg.first_step,
                    cfg.max_interval_steps, every, plan.epoch_starts[1:] if plan.scheduled else None)


def relative_resolution(per_decade: int) -> float:
    """The largest (check - previous check) / previous check on the log grid: r - 1."""
    return 10 ** (1 / per_decade) - 1


def within_budget(check_seconds: float, train_seconds: float, last_check_seconds: float | None,
                  budget: float | None, final: bool = False) -> bool:
    """Whether to run this check: the first (no cost known yet) and the `final` one always run;
    any other only if it and the final one, each costing about what the last did, keep the checks
    within `budget`, a share of the training time so far (None: no limit). Training time only
    grows, so a cell ends within budget unless its first check alone exceeds it."""
    if budget is None or last_check_seconds is None or final:
        return True
    return check_seconds + 2 * last_check_seconds <= budget * train_seconds
