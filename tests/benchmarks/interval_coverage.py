"""Benchmark, not a test: do the 90% intervals cover what they claim?

    python tests/benchmarks/interval_coverage.py [--trials 400] [GRID_FOLDER ...]

1. `harness predict`'s steps intervals (analysis/fit.py) on synthetic short runs: S_min and
   B_noise drawn at random, steps = S(B) x lognormal seed noise (sd 0.25 in log: ±25%), short runs
   at 32, 128 and 512 with 2 and 3 seeds; the share of trials whose interval holds the true S(B),
   per batch size of the grid 8..1024, and for S_min and B_noise.
2. Each GRID_FOLDER (a grid run in full with its predict.json beside it): per batch size, the
   grid's mean steps to target (fitted crossing) and whether it lies in predict's 90% interval for
   the mean of the grid's seeds (`steps_grid_interval`).
The grid's own intervals (analysis/stats.py) are measured by tests/benchmarks/grid_coverage.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.analysis import per_batch
from harness.analysis.collect import collect
from harness.prediction import forecast

GRID = (8, 16, 32, 64, 128, 256, 512, 1024)
NOISE = 0.25


def synthetic_runs(s_min: float, b_noise: float, seeds: int, rng: np.random.Generator) -> list[forecast.ShortRun]:
    runs = []
    for batch in forecast.short_run_batches(list(GRID)):
        for seed in range(seeds):
            steps = s_min * (1 + b_noise / batch) * float(np.exp(rng.normal(0, NOISE)))
            runs.append(forecast.ShortRun(batch_size=batch, seed=seed, learning_rate=1e-3, reached=True,
                                          steps_to_target=round(steps), steps_before=round(steps * 0.9),
                                          steps_done=round(2 * steps),
                                          train_seconds=1.0, check_seconds=0.1, noise_scale=None, windows=[(20, 0.02)],
                                          crossing_steps=steps, settled=True))
    return runs


def predict_coverage(trials: int, seeds: int) -> dict[str, np.ndarray | float]:
    rng = np.random.default_rng(seeds)
    timings = [{"batch_size": b, "seconds_per_step": 1e-3, "window_seconds_per_step": [1e-3]} for b in GRID]
    inside, params, fits = np.zeros(len(GRID)), {"s_min": 0, "b_noise": 0}, 0
    for trial in range(trials):
        s_min, b_noise = rng.uniform(100, 1000), float(np.exp(rng.uniform(np.log(30), np.log(3000))))
        fitted = forecast.fit_and_predict(synthetic_runs(s_min, b_noise, seeds, rng), timings, seed=trial)
        if fitted is None:  # steps not falling with B: predict stops with "no fit" (exit 2)
            continue
        fits += 1
        truth = s_min * (1 + b_noise / np.array(GRID))
        low, high = np.array([p["steps_interval"] for p in fitted["predictions"]]).T
        inside += (low <= truth) & (truth <= high)
        for name, value in (("s_min", s_min), ("b_noise", b_noise)):
            params[name] += fitted[f"{name}_interval"][0] <= value <= fitted[f"{name}_interval"][1]
    return {"per_batch": inside / fits, "pooled": float(inside.sum() / fits / len(GRID)), "fits": fits,
            **{name: count / fits for name, count in params.items()}}


def grid_coverage(folder: Path) -> str:
    found = collect([folder])
    key = next(iter(found.predictions))
    doc = found.predictions[key]
    target = doc["inputs"]["target"]
    cells = per_batch.add_time_to_target(found.cells, found.checks, found.epochs, target)
    measured = per_batch.by_batch_size(cells, doc["inputs"]["tolerance"]).set_index("batch_size")
    lines = [f"{folder.name} (target {target}, {doc['fit']['grid_seeds']} seeds; doubts: "
             f"{', '.join(d['kind'] for d in doc.get('doubts', [])) or 'none'})",
             "| batch | predicted steps (90% for the grid's mean) | measured mean steps | inside |",
             "| ---: | ---: | ---: | :---: |"]
    inside = total = 0
    for row in doc["fit"]["predictions"]:
        b = row["batch_size"]
        mean = measured["steps_to_target"].get(b, np.nan)
        all_reached = measured["reached_target"].get(b) == measured["n"].get(b)
        low, high = row["steps_grid_interval"]
        ok = all_reached and low <= mean <= high
        inside, total = inside + ok, total + all_reached
        shown = f"{mean:,.0f}" if all_reached else "not reached by every seed"
        lines.append(f"| {b} | {row['steps_to_target']:,.0f} ({low:,.0f}-{high:,.0f}) | {shown} | "
                     f"{'yes' if ok else ('no' if all_reached else '—')} |")
    lines.append(f"inside: {inside} of {total} batch sizes")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--trials", type=int, default=400)
    args = parser.parse_args()
    print(f"harness predict's 90% steps intervals, synthetic, {args.trials} trials, seed noise sd {NOISE} in log:")
    print("| short-run seeds | trials fitted | " + " | ".join(f"B={b}" for b in GRID) + " | pooled | S_min | B_noise |")
    print("| ---: " * (len(GRID) + 5) + "|")
    for seeds in (2, 3):
        c = predict_coverage(args.trials, seeds)
        print(f"| {seeds} | {c['fits']} | " + " | ".join(f"{v:.0%}" for v in c["per_batch"])
              + f" | {c['pooled']:.1%} | {c['s_min']:.0%} | {c['b_noise']:.0%} |")
    for folder in args.folders:
        print("\n" + grid_coverage(folder))


if __name__ == "__main__":
    main()
