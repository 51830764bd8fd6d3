"""Benchmark, not a test: do the grid's 90% intervals and ties cover what they claim?

    python tests/benchmarks/grid_coverage.py [--trials 400] [--subsets 400] [FOLDER ...]

1. Synthetic cells with a known truth, read by the report's own code: each seed's learning curve
   crosses the target at S_i = S x lognormal seed noise (sd 0.03-0.15 in log, like the committed
   grids' 0.03-0.13), checked on the harness's own log schedule (harness/checks.py) with check noise (sd 0.002-0.008
   of accuracy) and a slope of 0.008-0.04 per e-fold of steps (the committed grids' ranges); its
   crossing read by analysis/crossing.py; its seconds per step r_i = r x lognormal run noise (sd
   0.01-0.06), timed in 20 windows (sd 0.01-0.1). Two curve shapes: "bent", flattening as real
   curves do (second derivative over slope -0.1 to -1.2, as measured on MNIST and Fashion-MNIST),
   and "straight" (a line in log steps). The truth with n >= 2 seeds: the mean time to target over
   seeds, E[S_i r_i]; with one seed, that seed's own S_i r_i (seed-to-seed variation is what one
   seed cannot show, and the report says so).
2. Ties: four batch sizes whose true mean times lie within 0-30% of each other; the share of
   trials whose tie set (the sweet spot and those tied with it) holds the truly fastest one.
3. Each FOLDER with many seeds per batch size (results/schedule-robustness/fashion_dense_seeds):
   subsets of 2 and 3 of its seeds drawn at random, each subset's interval against the mean time
   to target of all the folder's seeds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from harness import checks
from harness.analysis import per_batch, stats
from harness.analysis.collect import collect
from harness.analysis.crossing import crossing
from harness.config import CheckSettings

TARGET = 0.9
SEED_COUNTS = (1, 2, 3, 4, 8)
TIE_BATCHES = (16, 32, 64, 128)


def schedule(last: float) -> np.ndarray:
    """The harness's own log schedule (harness/checks.py, the default 25 per decade from step 10)
    for a run of `last` steps in one epoch."""
    defaults = CheckSettings()
    return np.array(checks.schedule(int(last), int(last), defaults.per_decade, defaults.first_step), dtype=float)


def scenario(rng: np.random.Generator, bent: bool) -> dict[str, float]:
    return {"seed_sd": rng.uniform(0.03, 0.15), "run_sd": rng.uniform(0.01, 0.06), "slope": rng.uniform(0.008, 0.04),
            "bend": rng.uniform(0.1, 1.2) if bent else 1e-6, "check_sd": rng.uniform(0.002, 0.008),
            "window_sd": rng.uniform(0.01, 0.1)}


def curve(steps: np.ndarray, crossing_at: float, s: dict[str, float]) -> np.ndarray:
    """Expected validation accuracy at `steps` of a run crossing the target at `crossing_at`."""
    return TARGET + s["slope"] / s["bend"] * (1 - np.exp(-s["bend"] * np.log(steps / crossing_at)))


def read_by_the_rule(crossing_at: float, s: dict[str, float]) -> float:
    """What the report's rule reads from the expected curve, checked on the same schedule without
    noise: the estimand (on a bent curve the line reads a few percent later than the curve crosses)."""
    steps = schedule(2.2 * crossing_at)
    return crossing(steps, curve(steps, crossing_at, s), TARGET).steps


def synthetic_cell(crossing_at: float, rate: float, s: dict[str, float], rng: np.random.Generator):
    """One seed's checks and timing windows read as the report reads them, or None if it never
    reached the target (its checks run to 2.2x the crossing, as a grid's last epochs do)."""
    steps = schedule(2.2 * crossing_at)
    found = crossing(steps, curve(steps, crossing_at, s) + rng.normal(0, s["check_sd"], len(steps)), TARGET)
    if found is None:
        return None
    windows = rate * np.exp(rng.normal(0, s["window_sd"], 20))
    return stats.CellSample(accuracy=0.9, reached=True, time=found.steps * float(windows.mean()),
                            steps_low=found.before, steps_high=found.after, log_se=found.log_se or 0.0,
                            rates=windows, weights=np.full(20, 50.0))


def batch_cells(mean_steps: float, rate: float, seeds: int, s: dict[str, float], rng: np.random.Generator):
    """(cells, truth, the curve's own crossing time) for one batch size. The truth: the mean over
    seeds of the rule's reading x seconds per step (the rule reads every seed late by the same
    factor, that of the mean run); with one seed, that seed's own."""
    cells, own = [], []
    for _ in range(seeds):
        at = mean_steps * math.exp(rng.normal(0, s["seed_sd"]) - s["seed_sd"] ** 2 / 2)
        r = rate * math.exp(rng.normal(0, s["run_sd"]) - s["run_sd"] ** 2 / 2)
        cell = synthetic_cell(at, r, s, rng)
        if cell is None:
            return None, None, None
        cells.append(cell)
        own.append((read_by_the_rule(at, s) * r, at * r))
    if seeds == 1:
        return cells, *own[0]
    return cells, read_by_the_rule(mean_steps, s) * rate, mean_steps * rate


def interval_coverage(trials: int, seeds: int, bent: bool) -> tuple[float, float]:
    """The share of trials whose 90% interval of a batch size's mean time to target holds the truth,
    and the share holding the curve's own crossing time instead."""
    rng = np.random.default_rng(1000 * seeds + bent)
    inside = crossed = done = 0
    while done < trials:
        cells, truth, curve_time = batch_cells(1000.0, 1e-3, seeds, scenario(rng, bent), rng)
        if cells is None:
            continue
        low, high = stats.interval(stats.draw({64: cells}, 0.005, seed=done), 64)
        inside, crossed, done = inside + (low <= truth <= high), crossed + (low <= curve_time <= high), done + 1
    return inside / trials, crossed / trials


def tie_coverage(trials: int, seeds: int, bent: bool) -> tuple[float, float]:
    """The share of trials whose tie set holds the truly fastest batch size, and the tie set's mean size."""
    rng = np.random.default_rng(2000 * seeds + bent)
    held = done = size = 0
    while done < trials:
        s = scenario(rng, bent)
        means = 1000.0 * (1 + rng.uniform(0, 0.3, len(TIE_BATCHES)))
        drawn = {b: batch_cells(m, 1e-3, seeds, s, rng) for b, m in zip(TIE_BATCHES, means)}
        if any(cells is None for cells, _, _ in drawn.values()):
            continue
        by_batch = {b: cells for b, (cells, _, _) in drawn.items()}
        draws = stats.draw(by_batch, 0.005, seed=done)
        winner = min(TIE_BATCHES, key=lambda b: (np.mean([c.time for c in by_batch[b]]), b))
        fastest = min(TIE_BATCHES, key=lambda b: drawn[b][1])
        tie_set = (winner, *stats.tied_with(draws, winner, list(TIE_BATCHES)))
        held, size, done = held + (fastest in tie_set), size + len(tie_set), done + 1
    return held / trials, size / trials


def subset_coverage(folder: Path, sizes: tuple[int, ...], subsets: int, target: float) -> list[str]:
    """Per subset size: the share of random seed subsets whose interval holds the mean time to target
    of all the folder's seeds at that batch size, over every batch size all of whose seeds reached
    the target, and per batch size."""
    from harness.analysis.recommend import samples

    found = collect([folder])
    cells = per_batch.add_time_to_target(found.cells, found.checks, found.epochs, target)
    everyone = samples(cells[cells["status"] == "done"], per_batch.timing_windows(found.checks, found.epochs))
    everyone = {b: seeds for b, seeds in sorted(everyone.items()) if all(c.reached for c in seeds)}
    rng = np.random.default_rng(7)
    lines = []
    for size in sizes:
        held = {}
        for batch, all_seeds in everyone.items():
            truth = float(np.mean([c.time for c in all_seeds]))
            picks = [rng.choice(len(all_seeds), size, replace=False) for _ in range(subsets)]
            bounds = [stats.interval(stats.draw({batch: [all_seeds[i] for i in p]}, 0.005, seed=k), batch)
                      for k, p in enumerate(picks)]
            held[batch] = np.mean([low <= truth <= high for low, high in bounds])
        per = ", ".join(f"{b}: {v:.0%}" for b, v in held.items())
        lines.append(f"| {folder.name} | {size} of {len(all_seeds)} | {subsets} x {len(held)} | "
                     f"{np.mean(list(held.values())):.1%} | {per} |")
    return lines


def normal_mean_draws(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Tried: the mean's normal distribution, without the small-sample correction."""
    if len(values) < 2:
        return np.full(resamples, float(values[0]))
    return values.mean() + values.std(ddof=1) / math.sqrt(len(values)) * rng.standard_normal(resamples)


def bootstrap_mean_draws(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Tried (the report's until this study): the seeds drawn with replacement, their mean."""
    if len(values) < 2:
        return np.full(resamples, float(values[0]))
    return values[rng.integers(len(values), size=(resamples, len(values)))].mean(axis=1)


PROCEDURES = {"student-t": stats._mean_draws, "normal": normal_mean_draws, "seed-bootstrap": bootstrap_mean_draws}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--subsets", type=int, default=400)
    parser.add_argument("--target", type=float, default=0.86)
    parser.add_argument("--procedure", choices=sorted(PROCEDURES), default="student-t",
                        help="the report's (student-t) or one tried and set aside")
    args = parser.parse_args()
    stats._mean_draws = PROCEDURES[args.procedure]
    print(f"the grid's 90% intervals and ties on synthetic cells, {args.trials} trials each ({args.procedure}):")
    print(f"| curve | seeds | interval holds the truth | tie set holds the fastest | tie set size (of "
          f"{len(TIE_BATCHES)}) | interval holds the curve's own crossing |\n" + "| --- " + "| ---: " * 5 + "|")
    for bent in (True, False):
        for seeds in SEED_COUNTS:
            held, crossed = interval_coverage(args.trials, seeds, bent)
            tied, size = tie_coverage(args.trials, seeds, bent)
            shape = "bent" if bent else "straight"
            print(f"| {shape} | {seeds} | {held:.1%} | {tied:.1%} | {size:.2f} | {crossed:.1%} |", flush=True)
    if args.folders:
        print("\nseed subsets of committed grids, each interval against the mean of all the folder's seeds:")
        print("| folder | seeds drawn | intervals | hold the mean | per batch size |\n"
              "| --- | ---: | ---: | ---: | --- |")
        for folder in args.folders:
            print("\n".join(subset_coverage(folder, (2, 3), args.subsets, args.target)), flush=True)


if __name__ == "__main__":
    main()
