"""Benchmark, not a test: does the reading of steps to target move with the check schedule?

    python tests/benchmarks/schedule_robustness.py RESULTS_DIR [RESULTS_DIR ...] [--target 0.97] [--out FILE]

Each RESULTS_DIR holds cells run with the log schedule AND a dense one (`--set
checks.every_images=1024 --set checks.budget=null`): the same training, checked at both. Each
cell's checks are split back into the log schedule's steps and the dense schedule's, and steps to
target are read from each by the first check at or above the target and by the local fit
(harness/analysis/crossing.py). Prints, per batch size, both readings from both schedules, the
log/dense ratio of each, the fit's standard error on each schedule, z = log(ratio) over the two
standard errors combined, and the noise floor: the fit read from the dense checks' two disjoint
halves (every other check), as far apart as two independent schedules of that density can be.
With several seeds of a batch size the readings are their mean (as the report's), and
`seed_sd` is the spread of one seed's log(fit log / fit dense); the standard errors, z and the
columns below stay one seed's (their mean over the seeds).

The columns `shape_x2` and `shape_run` bound every estimator, not just ours: one that knows the curve's exact shape and
reads only its position (a shift in log steps) from the checks, under independent check noise (sd
from second differences of the dense checks, robust), cannot get the log/dense readings closer than
the printed standard deviation, using the checks within a factor 2 of the crossing (`shape_x2`) or
every check of the run (`shape_run`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import checks
from harness.analysis.crossing import crossing
from harness.config import CellSettings, CheckSettings


def _local_slope(x: np.ndarray, y: np.ndarray, x0: float, half_width: float) -> float:
    near = np.abs(x - x0) <= half_width
    return float(np.polyfit(x[near], y[near], 1)[0]) if near.sum() >= 3 else np.nan


def shape_known_sd(dense: pd.DataFrame, log: pd.DataFrame, crossing_steps: float, window: float) -> float:
    """Sd of log(log reading / dense reading) for the best shift estimator (inverse Fisher weights)."""
    x, y = np.log(dense["step"].to_numpy(float)), dense["val_accuracy"].to_numpy(float)
    x0 = math.log(crossing_steps)
    near = y[np.abs(x - x0) <= math.log(2)]
    second_diff = near[1:-1] - (near[:-2] + near[2:]) / 2
    sigma = 1.4826 * float(np.median(np.abs(second_diff))) / math.sqrt(1.5)
    weights = {}
    for name, rows in (("log", log), ("dense", dense)):
        steps = rows["step"].to_numpy(float)
        steps = steps[np.abs(np.log(steps) - x0) <= math.log(window)]
        slopes = np.array([_local_slope(x, y, xi, math.log(2)) for xi in np.log(steps)])
        steps, slopes = steps[np.isfinite(slopes)], slopes[np.isfinite(slopes)]
        weights[name] = dict(zip(steps, slopes / float(np.sum(slopes**2))))
    keys = set(weights["log"]) | set(weights["dense"])
    return sigma * math.sqrt(sum((weights["log"].get(k, 0.0) - weights["dense"].get(k, 0.0)) ** 2 for k in keys))


def readings(cell_dir: Path, target: float) -> dict | None:
    record = json.loads((cell_dir / "result.json").read_text())
    plan = json.loads((cell_dir.parent / "plan.json").read_text())
    settings = CellSettings(**record["settings"])
    cfg = CheckSettings(**plan["config"]["checks"])
    log = set(checks.schedule(settings.total_steps, settings.steps_per_epoch, cfg.per_decade, cfg.first_step,
                              cfg.max_interval_steps))
    every = max(1, round(cfg.every_images / settings.train.batch_size))
    dense = set(range(every, settings.total_steps + 1, every))
    evals = pd.read_csv(cell_dir / "evals.csv")
    out = {"batch_size": settings.train.batch_size, "seed": settings.train.seed}
    checked = {name: evals[evals["step"].isin(steps)] for name, steps in (("log", log), ("dense", dense))}
    for name, rows in checked.items():
        above = rows[rows["val_accuracy"] >= target]
        found = crossing(rows["step"].to_numpy(float), rows["val_accuracy"].to_numpy(float), target)
        if found is None or above.empty:
            return None
        out |= {f"first_{name}": float(above["step"].iloc[0]), f"fit_{name}": found.steps, f"checks_{name}": len(rows),
                f"se_{name}": found.log_se if found.log_se is not None else np.nan}
        if name == "dense":
            halves = [crossing(rows["step"].to_numpy(float)[i::2], rows["val_accuracy"].to_numpy(float)[i::2], target)
                      for i in (0, 1)]
            out["halves_ratio"] = halves[0].steps / halves[1].steps if all(halves) else np.nan
    for window, column in ((2.0, "shape_x2"), (1e9, "shape_run")):
        out[column] = shape_known_sd(checked["dense"], checked["log"], out["fit_dense"], window)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = pd.DataFrame([r for folder in args.folders for d in sorted(folder.glob("*/result.json"))
                         if (r := readings(d.parent, args.target))])
    rows["log_ratio"] = np.log(rows["fit_log"] / rows["fit_dense"])
    table = rows.groupby("batch_size").agg(seed_sd=("log_ratio", "std"),
        **{k: (k, "mean") for k in ("first_log", "first_dense", "fit_log", "fit_dense", "se_log", "se_dense",
                                    "halves_ratio", "shape_x2", "shape_run")},
        checks_log=("checks_log", "mean"), checks_dense=("checks_dense", "mean"), seeds=("seed", "size")).reset_index()
    table["first_ratio"] = table["first_log"] / table["first_dense"]
    table["fit_ratio"] = table["fit_log"] / table["fit_dense"]
    table["z"] = np.log(table["fit_ratio"]) / np.hypot(table["se_log"], table["se_dense"])
    print(f"{', '.join(map(str, args.folders))}: target {args.target}; steps to target read from the log and the "
          f"dense checks of the same runs")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    gm = lambda col: float(np.exp(np.log(table[col]).mean()))  # noqa: E731
    print(f"geometric mean log/dense: first check {gm('first_ratio'):.3f}, local fit {gm('fit_ratio'):.3f}; "
          f"largest first-check deviation {abs(table['first_ratio'] - 1).max():.1%}, local fit "
          f"{abs(table['fit_ratio'] - 1).max():.1%}; "
          f"|z| <= 1.645 at {(table['z'].abs() <= 1.645).sum()} of {len(table)}; dense halves apart by up to "
          f"{abs(table['halves_ratio'] - 1).max():.1%}")
    within = lambda sd: math.erf(math.log(1.05) / sd / math.sqrt(2))  # noqa: E731
    print("an estimator knowing the curve's shape, log and dense within 5% at every batch size: "
          + ", ".join(f"{col} {np.prod([within(sd) for sd in table[col]]):.0%}" for col in ("shape_x2", "shape_run")))
    if args.out:
        args.out.write_text(table.to_json(orient="records", indent=1) + "\n")


if __name__ == "__main__":
    main()
