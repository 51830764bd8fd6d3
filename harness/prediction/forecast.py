"""The pure part of `harness predict`: from short runs and timings to the sweet spot, with no
training and no files. Nothing here imports torch.

Time to target = steps to target(B) x time per step(B). The first factor is statistics: short runs
to the target at three batch sizes of the grid fix S_min and B_noise of S(B) = S_min (1 + B_noise / B)
(analysis/fit.py). The second is hardware: every batch size of the grid is timed for a few hundred
steps (predict/runs.py). Which batch sizes run to the target: the grid's at 2/7, 4/7 and 6/7 of the
way along its sorted list (for 8..1024 in powers of 2: 32, 128 and 512); the smallest are left out
because they cost the most per image, the largest because at a fixed rate they may never reach the
target. The choice: the fastest predicted time to target among the batch sizes predicted to reach
it within their epochs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from harness.analysis.fit import fit_steps
from harness.record.results import utc_now

PREDICT_SCHEMA_VERSION = 1
POSITIONS = (2 / 7, 4 / 7, 6 / 7)
# the timing pass (predict/runs.py): windows of TIMING_WINDOW steps until both minimums are met
TIMING_MIN_STEPS, TIMING_MIN_SECONDS, TIMING_WINDOW = 200, 2.0, 20
RESAMPLES = 2000


def short_run_batches(grid: list[int]) -> list[int]:
    sizes = sorted(set(grid))
    picks = sorted({sizes[round((len(sizes) - 1) * p)] for p in POSITIONS})
    return picks if len(picks) == 3 else sizes[-3:]  # a grid of 3 or 4: the positions coincide


@dataclass
class ShortRun:
    batch_size: int
    seed: int
    learning_rate: float
    reached: bool
    steps_to_target: int | None  # the first check at or above the target
    steps_before: int  # the check before it: the crossing lies in (steps_before, steps_to_target]
    steps_done: int
    train_seconds: float  # every training step, warm-up included (checks excluded)
    check_seconds: float
    noise_scale: float | None  # B_simple on the probe, where the run stopped
    windows: list[tuple[int, float]]  # (timed steps, seconds) per stretch between checks
    checks_skipped: int = 0  # scheduled checks skipped to keep checks within harness/checks.py's budget


def timing_from_runs(runs: list[ShortRun]) -> dict[str, Any]:
    """Seconds per step of a batch size from its short runs' timed windows (those of at least
    TIMING_WINDOW steps, where there are any: a one-step window is mostly its two syncs)."""
    windows = [w for r in runs for w in r.windows]
    long = [w for w in windows if w[0] >= TIMING_WINDOW] or windows
    rates = [seconds / steps for steps, seconds in long]
    return {"batch_size": runs[0].batch_size, "learning_rate": runs[0].learning_rate, "source": "short runs",
            "warmup_seconds": 0.0, "steps": sum(w[0] for w in windows), "seconds": 0.0,  # counted in the runs
            "seconds_per_step": float(np.median(rates)), "window_seconds_per_step": rates}


def fit_and_predict(runs: list[ShortRun], timings: list[dict], seed: int = 0) -> dict[str, Any] | None:
    """S_min and B_noise with 90% intervals (a bootstrap over the short runs' seeds and the crossing
    within each check's resolution), and steps and time to target for every timed batch size. The
    steps predicted are where the target is crossed; a grid cell reports the first check after the
    crossing, up to one check interval (< 10%) later."""
    reached = [r for r in runs if r.reached]
    # the crossing lies in (steps_before, steps_to_target]: the point fit takes each middle, the
    # bootstrap draws within it
    point = fit_steps([r.batch_size for r in reached], [(r.steps_before + r.steps_to_target) / 2 for r in reached])
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    by_batch: dict[int, list[ShortRun]] = {}
    for r in reached:
        by_batch.setdefault(r.batch_size, []).append(r)
    grid = np.array([t["batch_size"] for t in timings], dtype=float)
    # a batch size whose predicted crossing lies beyond the steps its epochs allow does not reach the
    # target in a grid cell either (the H200's batch 2048: 152 steps predicted, 107 allowed)
    budget = np.array([t.get("budget_steps") or np.inf for t in timings], dtype=float)
    fits, steps_draws, time_draws = [], [], []  # time: every draw, whether or not within the epochs
    for _ in range(RESAMPLES):
        sample = [(b, rng.uniform(r.steps_before, r.steps_to_target)) for b, group in by_batch.items()
                  for r in (group[i] for i in rng.integers(len(group), size=len(group)))]
        model = fit_steps([b for b, _ in sample], [x for _, x in sample])
        if model is None:
            continue
        fits.append((model.s_min, model.b_noise))
        steps = model.steps(grid)
        steps_draws.append(steps)
        time_draws.append(steps * np.array([rng.choice(t["window_seconds_per_step"]) for t in timings]))
    fits, steps_draws, time_draws = np.array(fits), np.array(steps_draws), np.array(time_draws)
    q = [0.05, 0.95]
    winners = np.array([])
    if len(time_draws):  # a draw's winner: the fastest batch size that reaches the target within its epochs
        eligible = np.where(steps_draws <= budget, time_draws, np.inf)
        some = np.isfinite(eligible).any(axis=1)
        winners = grid[np.argmin(eligible[some], axis=1)]
    predictions = []
    for j, t in enumerate(timings):
        steps = float(point.steps(grid[j]))
        predictions.append({
            "batch_size": t["batch_size"], "steps_to_target": steps,
            "steps_interval": np.quantile(steps_draws[:, j], q).tolist() if len(steps_draws) else None,
            "budget_steps": t.get("budget_steps"), "within_budget": bool(steps <= budget[j]),
            "time_to_target_s": steps * t["seconds_per_step"],
            "time_interval_s": np.quantile(time_draws[:, j], q).tolist() if len(time_draws) else None,
            "win_share": float(np.sum(winners == grid[j]) / len(time_draws)) if len(time_draws) else None})
    return {"s_min": point.s_min, "b_noise": point.b_noise,
            "s_min_interval": np.quantile(fits[:, 0], q).tolist() if len(fits) else None,
            "b_noise_interval": np.quantile(fits[:, 1], q).tolist() if len(fits) else None,
            "converged_resamples": len(fits) / RESAMPLES, "points": point.points, "predictions": predictions}


def sweet_spot(fitted: dict[str, Any]) -> dict[str, Any] | None:
    """The batch size with the shortest predicted time to target among those predicted to reach it
    within their epochs, and its neighbours in the grid; None where none is."""
    rows = fitted["predictions"]
    within = [i for i, r in enumerate(rows) if r.get("within_budget", True)]
    if not within:
        return None
    best = min(within, key=lambda i: (rows[i]["time_to_target_s"], rows[i]["batch_size"]))
    neighbours = [rows[i]["batch_size"] for i in (best - 1, best + 1) if 0 <= i < len(rows)]
    return {"batch_size": rows[best]["batch_size"], "neighbours": neighbours}


def document(config: dict, inputs: dict, runs: list[ShortRun], timings: list[dict], fitted: dict | None,
             started: float, reason: str | None = None) -> dict[str, Any]:
    spent = sum(r.train_seconds for r in runs) + sum(t["seconds"] + t["warmup_seconds"] for t in timings)
    return {"schema_version": PREDICT_SCHEMA_VERSION, "created_utc": utc_now(), "config": config,
            "inputs": inputs, "short_runs": [asdict(r) for r in runs], "timing": timings, "fit": fitted,
            "sweet_spot": sweet_spot(fitted) if fitted else None, "failure": reason,
            "b_simple": _median([r.noise_scale for r in runs]),
            "cost": {"train_seconds": spent, "check_seconds": sum(r.check_seconds for r in runs),
                     "wall_seconds": time.perf_counter() - started}}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(known)) if known else None


def why_no_fit(runs: list[ShortRun], target: float) -> str:
    reached = sorted({r.batch_size for r in runs if r.reached})
    if len(reached) < 2:
        return (f"no fit: only {len(reached)} of the short runs' batch sizes ({', '.join(map(str, reached)) or 'none'}) "
                f"reached {target} within its step budget (train.epochs x steps per epoch); lower "
                f"report.target_accuracy or raise train.epochs")
    return (f"the fit of S(B) = S_min (1 + B_noise / B) did not converge: steps to {target} did not fall with the batch "
            f"size ({', '.join(f'{r.batch_size}: {r.steps_to_target}' for r in runs if r.reached)}); the learning "
            f"rate rule may not suit these batch sizes: tune optim.lr per batch size (configs/lr_tuned.yaml)")
