"""`harness.sweep` and `harness.predict`, for people who live in notebooks: the same cells as
`harness run` and `harness predict` (the same ids, the same files), trained in this process.

    import harness
    result = harness.sweep(model=build, data=load, batch_sizes=[16, 64, 256], target=0.9)
    result.sweet_spot, result.per_batch, result.report

`model`, `data`, `loss` and `metric` are callables (or FILE.py:NAME strings, relative to the
working folder); a callable defined in a module file is recorded as that file, so the config
route and this one give the same cell ids. One defined in a notebook or a script lives only in
this process: Slurm cannot load it (define it in a file for that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness import plan, workload
from harness.config import SweepConfig, parse
from harness.record import results


@dataclass(frozen=True)
class SweepResult:
    sweet_spot: int | None  # the batch size, or None where none reached the target
    explanation: str  # the report's first sentence about it
    ties: list[int]  # batch sizes statistically tied with it
    notes: list[str]  # the caveats the report's first screen lists
    per_batch: pd.DataFrame  # one row per batch size, at its picked learning rate
    report: Path | None
    results: Path  # RESULTS_DIR/<name>/


def sweep(model: Callable | str, data: Callable | str | None = None, *, batch_sizes: list[int],
          seeds: list[int] = (0,), target: float = 0.97, lr: float = 1e-3, epochs: int = 5,
          loss: Callable | str | None = None, metric: Callable | str | None = None, options: dict | None = None,
          name: str = "sweep", results_dir: str | Path = "results", data_dir: str | Path | None = None,
          settings: dict[str, Any] | None = None, quiet: bool = True, report: bool = True) -> SweepResult:
    """Train every cell not yet done (batch sizes x seeds), write the report, return the answer.
    `model` may also name a built-in workload ("mnist_conv") with `data` left out; `settings`
    holds any other config sections ({"train": {"mode": "compile"}}); bad input raises
    harness.errors.HarnessError with the same one line the command prints."""
    from harness.report.page import build_report
    from harness.training.sweep import run_sweep

    config, cells, sweep_dir = _plan(model, data, loss, metric, options, batch_sizes, seeds, target, lr, epochs,
                                     name, results_dir, settings)
    results.check_writable(sweep_dir)
    run_sweep(config, cells, sweep_dir, _folders(cells, data_dir), quiet=quiet, all_cells=cells)
    page = sweep_dir / "report.html" if report else None
    if page is not None:
        build_report([sweep_dir], page)
    return _result(sweep_dir, page)


def predict(model: Callable | str, data: Callable | str | None = None, *, batch_sizes: list[int],
            seeds: list[int] = (0,), target: float = 0.97, lr: float = 1e-3, epochs: int = 5,
            loss: Callable | str | None = None, metric: Callable | str | None = None, options: dict | None = None,
            name: str = "sweep", results_dir: str | Path = "results", data_dir: str | Path | None = None,
            settings: dict[str, Any] | None = None, force: bool = False) -> dict:
    """`harness predict` on the same grid: short runs, the timing pass and the fit; returns
    predict.json's document (its "sweet_spot" the predicted batch size, its "doubts" why it may
    not hold) and writes it. Where it doubts itself it raises ConfigError, unless `force`."""
    from harness.prediction import runs
    from harness.training.progress import Progress

    config, cells, sweep_dir = _plan(model, data, loss, metric, options, batch_sizes, seeds, target, lr, epochs,
                                     name, results_dir, settings)
    runs.check_grid(config, cells)
    results.check_writable(sweep_dir)
    return runs.predict_sweep(config, cells, sweep_dir, _folders(cells, data_dir), Progress(True, True), force)


def _plan(model, data, loss, metric, options, batch_sizes, seeds, target, lr, epochs, name, results_dir,
          settings) -> tuple[SweepConfig, list[plan.Cell], Path]:
    roles = {"model": model, "data": data, "loss": loss, "metric": metric}
    if isinstance(model, str) and model in workload.BUILTINS and data is None:
        chosen: dict[str, Any] = {"name": model}
    else:
        chosen = {role: (fn if isinstance(fn, str) else workload.register(fn)) for role, fn in roles.items()
                  if fn is not None and role in ("model", "data")}
    chosen |= {role: (fn if isinstance(fn, str) else workload.register(fn)) for role, fn in roles.items()
               if fn is not None and role in ("loss", "metric")}
    raw: dict[str, Any] = {"name": name, "workload": chosen | ({"options": options} if options else {}),
                           "optim": {"lr": lr}, "train": {"epochs": epochs}, "report": {"target_accuracy": target},
                           "sweep": {"train.batch_size": list(batch_sizes), "train.seed": list(seeds)}}
    for section, values in (settings or {}).items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    config = parse(SweepConfig, raw, source="harness.sweep")
    return config, plan.expand(config), Path(results_dir) / config.name


def _folders(cells: list[plan.Cell], data_dir: str | Path | None) -> dict[str, Path] | None:
    from harness.cli import data_folders

    return data_folders(cells, str(data_dir) if data_dir else None)


def _result(sweep_dir: Path, page: Path | None) -> SweepResult:
    from harness.analysis.answer import answer
    from harness.analysis.collect import collect

    found = collect([sweep_dir])
    got = answer(found, (found.cells["source"].iloc[0], found.cells["sweep"].iloc[0]))
    verdict = got.verdicts[0]
    return SweepResult(verdict.batch_size, verdict.explanation, verdict.ties, verdict.notes, got.per_batch, page,
                       sweep_dir)
