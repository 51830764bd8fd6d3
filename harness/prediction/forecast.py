"""The pure part of `harness predict`: from short runs and timings to the sweet spot, with no
training and no files. Nothing here imports torch.

Time to target = steps to target(B) x time per step(B). The first factor is statistics: short runs
to the target at three batch sizes of the grid fix S_min and B_noise of S(B) = S_min (1 + B_noise / B)
(analysis/fit.py). The second is hardware: every batch size of the grid is timed for a few hundred
steps (predict/runs.py). Which batch sizes run to the target: the grid's at 2/7, 4/7 and 6/7 of the
way along its sorted list (for 8..1024 in powers of 2: 32, 128 and 512); the smallest are left out
because they cost the most per image, the largest because at a fixed rate they may never reach the
target. The choice: the fastest predicted time to target among the batch sizes predicted to reach
it within their epochs. What it cannot know it says (`doubts`): a target near what the short runs
reach (their accuracy stopped improving before their crossing settled), a short run its cap ended
while it still improved, a model that misses a batch size left out, a sweet spot outside the batch
sizes measured.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness import timing
from harness.analysis.crossing import WIDTH, checks_around
from harness.analysis.fit import StepsFit, fit_steps, left_out_misses
from harness.analysis.stats import LEVEL
from harness.record.documents import PREDICT_SCHEMA_VERSION
from harness.record.results import utc_now

POSITIONS = (2 / 7, 4 / 7, 6 / 7)
# the timing pass (predict/runs.py): windows of TIMING_WINDOW steps until both minimums are met
TIMING_MIN_STEPS, TIMING_MIN_SECONDS, TIMING_WINDOW = 200, 2.0, 20
RESAMPLES = 2000
# a gap between the checks around a short run's crossing wider than half of it: the reading is
# coarser than the seed noise (~25%) the fit sizes its intervals by
COARSE = 0.5
# a short run has stopped improving when the best check of the second half of its steps beats the
# best before it by no more than this many standard errors of one check (binomial, on its validation
# set); a target is near its ceiling when such a run's best lies no further above the target than that
PLATEAU_SE = 2.0
Q = [(1 - LEVEL) / 2, (1 + LEVEL) / 2]  # the two ends of a 90% interval


def short_run_batches(grid: list[int]) -> list[int]:
    sizes = sorted(set(grid))
    picks = sorted({sizes[round((len(sizes) - 1) * p)] for p in POSITIONS})
    return picks if len(picks) == 3 else sizes[-3:]  # a grid of 3 or 4: the positions coincide


@dataclass
class ShortRun:
    batch_size: int
    seed: int
    learning_rate: float
    reached: bool  # a check at or above the target
    steps_to_target: int | None  # the first check at or above the target (moves with the schedule)
    steps_before: int  # the check before it
    steps_done: int
    train_seconds: float  # every training step, warm-up included (checks excluded)
    check_seconds: float
    noise_scale: float | None  # B_simple on the probe, where the run stopped
    windows: list[tuple[int, float]]  # (timed steps, seconds) per stretch between checks
    checks_skipped: int = 0  # scheduled checks skipped to keep checks within harness/checks.py's budget
    checks: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)
    crossing_steps: float | None = None  # the fitted crossing (analysis/crossing.py): what the fit reads
    settled: bool = False  # its checks reached WIDTH x the crossing, so the grid would read the same
    cap_steps: int | None = None  # the most steps it could train (predict.short_run_cap x its cell's epochs)
    val_examples: int | None = None  # the validation set its checks were read on
    metric_mode: str = "max"  # the workload's metric: higher (max) or lower (min) is better
    metric_bounded: bool = True  # an accuracy in [0, 1], whose checks' standard error is known

    def oriented_checks(self) -> list[tuple[int, float]]:
        """(step, value) with the value where higher is better (negated for a min metric)."""
        return self.checks if self.metric_mode == "max" else [(step, -value) for step, value in self.checks]

    def oriented(self, value: float) -> float:
        return value if self.metric_mode == "max" else -value

    def check_se(self, value: float) -> float:
        """One check's standard error at an accuracy `value` (binomial over the validation set); 0
        for a metric of another kind, whose noise the harness does not know."""
        if not self.metric_bounded or not self.val_examples:
            return 0.0
        return float(np.sqrt(value * (1 - value) / self.val_examples))


def still_improving(run: ShortRun) -> bool:
    """Whether the run's validation accuracy still rose when it stopped: the best check in the
    second half of its steps beats the best before it by more than PLATEAU_SE standard errors of
    one check. Without checks on both sides it counts as improving (nothing says it stopped)."""
    checks = run.oriented_checks()
    early = [a for step, a in checks if step <= run.steps_done / 2]
    late = [a for step, a in checks if step > run.steps_done / 2]
    if not early or not late or not run.val_examples:
        return True
    best = max(early)
    return max(late) > best + PLATEAU_SE * run.check_se(best)


def shown(run: ShortRun, value: float) -> str:
    return f"accuracy {value:.4f}" if run.metric_bounded else f"score {value:.4g}"


def at_ceiling(run: ShortRun, target: float) -> bool:
    """The run stopped improving (`still_improving`) with its best check below the target or within
    PLATEAU_SE standard errors above it: more steps would not make its crossing any sharper."""
    if still_improving(run):
        return False
    best = max(a for _, a in run.oriented_checks())
    return best <= run.oriented(target) + PLATEAU_SE * run.check_se(target)


UNORDERED = 1.5  # a larger batch's step this many times faster than a smaller one's: disturbed


def timed_windows(windows: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The (steps, seconds) windows a batch size's seconds per step are read from: those of at
    least TIMING_WINDOW steps, where there are any (a one-step window is mostly its two syncs)."""
    return [w for w in windows if w[0] >= TIMING_WINDOW] or list(windows)


def timing_from_runs(runs: list[ShortRun]) -> dict[str, Any]:
    """Seconds per step of a batch size from its short runs' timed windows (`timed_windows`)."""
    windows = [w for r in runs for w in r.windows]
    rates = [seconds / steps for steps, seconds in timed_windows(windows)]
    spread, _ = timing.spread_of(rates)
    return {"batch_size": runs[0].batch_size, "learning_rate": runs[0].learning_rate, "source": "short runs",
            "warmup_seconds": 0.0, "steps": sum(w[0] for w in windows), "seconds": 0.0,  # counted in the runs
            "seconds_per_step": float(np.median(rates)), "window_seconds_per_step": rates, "time_spread": spread,
            "timing_disturbed_reason": "; ".join(timing.reasons(None, None, spread, "cpu")) or None}


def fit_and_predict(runs: list[ShortRun], timings: list[dict], seed: int = 0,
                    grid_seeds: int = 1) -> dict[str, Any] | None:
    """S_min and B_noise with 90% intervals, and steps and time to target for every timed batch
    size: steps with a 90% interval for their mean over seeds (`steps_interval`) and one for the
    mean of the grid's `grid_seeds` seeds (`steps_grid_interval`, what a grid will measure); time
    and how often each batch size wins from draws of the same model (analysis/fit.py) times each
    batch size's measured seconds per step."""
    reached = [r for r in runs if r.reached and r.crossing_steps]
    point = fit_steps([r.batch_size for r in reached], [r.crossing_steps for r in reached])
    if point is None:
        return None
    grid = np.array([t["batch_size"] for t in timings], dtype=float)
    # a batch size whose predicted crossing lies beyond the steps its epochs allow does not reach the
    # target in a grid cell either (the H200's batch 2048: 152 steps predicted, 107 allowed)
    budget = np.array([t.get("budget_steps") or np.inf for t in timings], dtype=float)
    draws = _draws(point, grid, np.random.default_rng(seed))
    if draws is not None:
        rng = np.random.default_rng(seed + 1)
        per_step = np.stack([rng.choice(t["window_seconds_per_step"], size=RESAMPLES) for t in timings], axis=1)
        steps_draws, time_draws = draws["steps"], draws["steps"] * per_step
        eligible = np.where(steps_draws <= budget, time_draws, np.inf)
        winners = grid[np.argmin(eligible[np.isfinite(eligible).any(axis=1)], axis=1)]
    steps_low, steps_high = point.interval(grid)
    grid_low, grid_high = point.interval(grid, new_seeds=grid_seeds)
    known = np.isfinite(steps_high)
    predictions = []
    for j, t in enumerate(timings):
        steps = float(point.steps(grid[j]))
        predictions.append({
            "batch_size": t["batch_size"], "steps_to_target": steps,
            "steps_interval": [float(steps_low[j]), float(steps_high[j])] if known[j] else None,
            "steps_grid_interval": [float(grid_low[j]), float(grid_high[j])] if known[j] else None,
            "budget_steps": t.get("budget_steps"), "within_budget": bool(steps <= budget[j]),
            "time_to_target_s": steps * t["seconds_per_step"],
            "time_interval_s": np.quantile(time_draws[:, j], Q).tolist() if draws is not None else None,
            "win_share": float(np.sum(winners == grid[j]) / RESAMPLES) if draws is not None else None})
    return {"s_min": point.s_min, "b_noise": point.b_noise,
            "s_min_interval": draws["s_min_interval"] if draws else None,
            "b_noise_interval": draws["b_noise_interval"] if draws else None,
            "log_residual_sd": float(np.sqrt(point.residual_var)) if point.dof > 0 else None,
            "degrees_of_freedom": point.dof, "misfit_per_octave": point.misfit_per_octave,
            "fitted_span": list(point.span), "grid_seeds": grid_seeds, "points": point.points,
            "left_out_misses": left_out_misses([r.batch_size for r in reached], [r.crossing_steps for r in reached]),
            "predictions": predictions}


def _draws(point: StepsFit, grid: np.ndarray, rng: np.random.Generator) -> dict[str, Any] | None:
    """RESAMPLES draws of log S(B) over the grid from the fit's t distribution (the linearised
    parameters and the misfit beyond the span, one scale per draw), and of S_min and B_noise."""
    if point.dof <= 0 or not np.isfinite(point.residual_var):
        return None
    scale = np.sqrt(point.dof / rng.chisquare(point.dof, size=RESAMPLES))[:, None]
    params = rng.multivariate_normal([0, 0], np.asarray(point.cov) * point.residual_var, size=RESAMPLES) * scale
    a, b = point.s_min, point.s_min * point.b_noise
    gradient = np.stack([np.ones_like(grid), 1 / grid], axis=1) / point.steps(grid)[:, None]
    misfit = point.misfit_per_octave * point.octaves_outside(grid) * rng.standard_normal((RESAMPLES, len(grid))) * scale
    # a t draw with 1 degree of freedom can be astronomically far out: e^60 steps is "never" enough
    steps = point.steps(grid) * np.exp(np.clip(params @ gradient.T + misfit, -60, 60))
    physical = (a + params[:, 0] > 0) & (b + params[:, 1] > 0)
    s_min, b_noise = a + params[physical, 0], (b + params[physical, 1]) / (a + params[physical, 0])
    return {"steps": steps, "s_min_interval": np.quantile(s_min, Q).tolist() if physical.any() else None,
            "b_noise_interval": np.quantile(b_noise, Q).tolist() if physical.any() else None}


def doubts(runs: list[ShortRun], fitted: dict[str, Any] | None, target: float,
           cap: float = 3.0, timings: list[dict[str, Any]] = ()) -> list[dict[str, str]]:
    """Why the prediction may not hold, each with what was measured; empty when none applies.
    Without a fit (`fitted` None), what the short runs alone say. `cap`: predict.short_run_cap;
    `timings`: the seconds per step of each batch size (a disturbed one is a doubt)."""
    flat = [r for r in runs if at_ceiling(r, target)]
    capped = [r for r in runs if not r.settled and r not in flat]
    found = []
    if flat:
        worst = max(flat, key=lambda r: r.batch_size)
        best = worst.oriented(max((a for r in flat for _, a in r.oriented_checks()), default=float("nan")))
        easier = "lower report.target_accuracy" if worst.metric_mode == "max" else "raise report.target"
        found.append({"kind": "near_ceiling", "text": (
            f"{target} is near what the short runs reach: {len(flat)} of {len(runs)} stopped improving at or "
            f"near it ({_where(worst)}; best validation {shown(worst, best)} of those runs, no better in the second "
            f"half of their steps); {easier}")})
    if capped:
        worst = max(capped, key=lambda r: (r.batch_size, r.seed))
        needed = max(WIDTH * (r.crossing_steps or r.steps_done) / r.steps_done for r in capped)
        rising = (", its accuracy still rising" if worst.metric_bounded else ", still improving") \
            if still_improving(worst) else ""
        found.append({"kind": "cap", "text": (
            f"the short run's cap ended at {worst.steps_done:,} steps before its crossing settled{rising} "
            f"({len(capped)} of {len(runs)}; {_where(worst)}): raise predict's cap with --set "
            f"predict.short_run_cap={max(2.0, np.ceil(cap * needed)):g}")})
    found += _coarse(runs) + disturbed_timings(timings)
    if fitted is None:
        return found
    for miss in fitted.get("left_out_misses", []):
        found.append({"kind": "misfit", "text": (
            f"S(B) = S_min (1 + B_noise / B) misses batch {miss['batch_size']} when it is left out: measured "
            f"{miss['measured']:,.0f} steps, the others predict {miss['predicted']:,.0f} "
            f"({miss['level']:.1%} {miss['interval'][0]:,.0f}-{miss['interval'][1]:,.0f})")})
    spot = sweet_spot(fitted)
    low, high = fitted["fitted_span"]
    if spot and not low <= spot["batch_size"] <= high:
        found.append({"kind": "extrapolated", "text": (
            f"the predicted sweet spot, batch {spot['batch_size']}, lies outside the short runs' batch sizes "
            f"({low:g}-{high:g}): its steps are extrapolated")})
    if fitted["degrees_of_freedom"] <= 0:
        found.append({"kind": "no_interval", "text": (
            f"{fitted['points']} short runs fix the 2 parameters exactly: no spread is left to size an interval; "
            f"run 2 seeds (sweep.train.seed: [0, 1])")})
    return found


def disturbed_timings(timings: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Timing passes that competed with other work (harness/timing.py), and seconds per step that
    fall by more than UNORDERED from a batch size to a larger one (more work per step in less
    time: one of them was disturbed)."""
    found = [f"batch {t['batch_size']}: {t['timing_disturbed_reason']}" for t in timings
             if t.get("timing_disturbed_reason")]
    ordered = sorted(timings, key=lambda t: t["batch_size"])
    found += [f"{small['seconds_per_step'] * 1e3:.3g} ms per step at batch {small['batch_size']} but "
              f"{large['seconds_per_step'] * 1e3:.3g} ms at batch {large['batch_size']}"
              for small, large in zip(ordered, ordered[1:])
              if large["seconds_per_step"] * UNORDERED < small["seconds_per_step"]]
    if not found:
        return []
    return [{"kind": "disturbed_timing", "text": (
        f"the seconds per step were measured while the machine was busy ({'; '.join(found)}): the predicted "
        "times, and so the sweet spot, may be off; predict again with the machine to itself")}]


def _where(run: ShortRun) -> str:
    """Where a run stood: its crossing and how far its checks went."""
    if run.crossing_steps and run.settled:
        return (f"batch {run.batch_size} seed {run.seed}: crossed at ~{run.crossing_steps:,.0f} steps of "
                f"{run.steps_done:,}")
    if run.crossing_steps:
        return (f"batch {run.batch_size} seed {run.seed}: crossed at ~{run.crossing_steps:,.0f} steps, checks end at "
                f"{run.steps_done:,}, {WIDTH:g}x the crossing is needed")
    return f"batch {run.batch_size} seed {run.seed}: not reached in {run.steps_done:,} steps"


def _coarse(runs: list[ShortRun]) -> list[dict[str, str]]:
    """Short runs whose checks around the crossing lie further apart than COARSE x the crossing:
    its steps are known only to that gap, and seeds read at the same two checks look alike, so the
    fit's spread understates the noise. Usually checks.budget thinned them (runs of a second)."""
    around = [(r, *checks_around(np.array([step for step, _ in r.checks], float), r.crossing_steps))
              for r in runs if r.crossing_steps and r.checks]
    coarse = [(r, before, after) for r, before, after in around if after - before > COARSE * r.crossing_steps]
    if not coarse:
        return []
    worst, before, after = max(coarse, key=lambda c: (c[2] - c[1]) / c[0].crossing_steps)
    return [{"kind": "coarse", "text": (
        f"{len(coarse)} of {len(runs)} short runs read their crossing between checks far apart (batch "
        f"{worst.batch_size} seed {worst.seed}: checks at {before:,.0f} and {after:,.0f} steps around ~"
        f"{worst.crossing_steps:,.0f}; {worst.checks_skipped} checks skipped to keep checks within checks.budget); "
        f"set checks.budget: null or train longer")}]


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
             started: float, reason: str | None = None, found_doubts: list | None = None) -> dict[str, Any]:
    spent = sum(r.train_seconds for r in runs) + sum(t["seconds"] + t["warmup_seconds"] for t in timings)
    return {"schema_version": PREDICT_SCHEMA_VERSION, "created_utc": utc_now(), "config": config,
            "inputs": inputs, "short_runs": [asdict(r) for r in runs], "timing": timings, "fit": fitted,
            "sweet_spot": sweet_spot(fitted) if fitted else None, "failure": reason, "doubts": found_doubts or [],
            "b_simple": _median([r.noise_scale for r in runs]),
            "cost": {"train_seconds": spent, "check_seconds": sum(r.check_seconds for r in runs),
                     "wall_seconds": time.perf_counter() - started}}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(known)) if known else None


def why_no_fit(runs: list[ShortRun], target: float, cap: float = 3.0) -> str:
    cause = next(iter(doubts(runs, None, target, cap)), None)
    if cause:  # runs that did not settle, or were read coarsely: what follows is its symptom
        return f"no fit: {cause['text']}"
    reached = sorted({r.batch_size for r in runs if r.reached})
    if len(reached) < 2:
        return (f"no fit: only {len(reached)} of the short runs' batch sizes "
                f"({', '.join(map(str, reached)) or 'none'}) "
                f"reached {target} within its cap (predict.short_run_cap x train.epochs); lower "
                f"report.target_accuracy or raise predict.short_run_cap")
    steps = ", ".join(f"{r.batch_size}: {r.crossing_steps:,.0f}" for r in runs if r.reached)
    return (f"the fit of S(B) = S_min (1 + B_noise / B) did not converge: steps to {target} did not fall with the "
            f"batch size ({steps}); the learning rate rule may not suit these batch sizes: tune optim.lr per batch "
            f"size (configs/lr_tuned.yaml)")
