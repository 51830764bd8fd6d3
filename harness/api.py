"""`harness.sweep`, `harness.predict`, `harness.capacity` and `harness.branch`, for people who live in
notebooks: the same cells as
`harness run` and `harness predict` (the same ids, the same files), trained in this process.

    import harness
    result = harness.sweep(model=build, data=load, batch_sizes=[16, 64, 256], target=0.9)
    result.sweet_spot, result.per_batch, result.report

    spec = harness.SweepSpec.from_config("configs/default.yaml", ["train.epochs=3"])
    harness.predict(spec)

Both take one `SweepSpec` (harness/spec.py), or its keyword arguments. `model`, `data`, `loss` and
`metric` are callables (or FILE.py:NAME strings, relative to the working folder); a callable
defined in a module file is recorded as that file, so the config route and this one give the
same cell ids. One defined in a notebook or a script lives only in this process: Slurm cannot
load it (define it in a file for that). Bad input raises harness.errors.HarnessError with the
same one line the command prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.record import documents, results
from harness.spec import SweepSpec


@dataclass(frozen=True)
class SweepResult:
    sweet_spot: int | None  # the batch size, or None where none reached the target
    explanation: str  # the report's first sentence about it
    ties: list[int]  # batch sizes statistically tied with it
    notes: list[str]  # the caveats the report's first screen lists
    per_batch: pd.DataFrame  # one row per batch size, at its picked learning rate
    report: Path | None
    results: Path  # RESULTS_DIR/<name>/


def sweep(spec: SweepSpec | Any = None, data: Any = None, *, quiet: bool = True, report: bool = True,
          force: bool = False, **keywords: Any) -> SweepResult:
    """Train every cell not yet done, write the report, return the answer. `spec` is a SweepSpec,
    or the model of SweepSpec.from_keywords (with `data` and its other keywords). A results folder
    holds one config: another one is refused (ConfigError) unless `force` (as `harness run --force`)."""
    from harness.report.page import build_report
    from harness.training.sweep import run_sweep

    spec = _spec(spec, data, keywords)
    documents.check_one_config(spec.sweep_dir, spec.config, force, "or force=True to replace its plan.json")
    results.check_writable(spec.sweep_dir)
    run_sweep(spec.config, spec.cells, spec.sweep_dir, _folders(spec), quiet=quiet, all_cells=spec.cells)
    page = spec.sweep_dir / "report.html" if report else None
    if page is not None:
        build_report([spec.sweep_dir], page)
    return _result(spec.sweep_dir, page)


def predict(spec: SweepSpec | Any = None, data: Any = None, *, force: bool = False, **keywords: Any) -> dict:
    """`harness predict` on the spec's grid: short runs, the timing pass and the fit; returns
    predict.json's document (its "sweet_spot" the predicted batch size, its "doubts" why it may
    not hold) and writes it. Where it doubts itself it raises ConfigError, unless `force`."""
    from harness.prediction import runs
    from harness.training.progress import Progress

    spec = _spec(spec, data, keywords)
    runs.check_grid(spec.config, spec.cells)
    documents.check_one_config(spec.sweep_dir, spec.config, False, "or harness.sweep(..., force=True) with this spec "
                               "first to replace its plan.json")
    results.check_writable(spec.sweep_dir)
    return runs.predict_sweep(spec.config, spec.cells, spec.sweep_dir, _folders(spec), Progress(True, True), force)


def capacity(spec: SweepSpec | Any = None, data: Any = None, *, margin: float = 0.1, memory_limit: str | None = None,
             quiet: bool = True, **keywords: Any) -> dict:
    """`harness capacity` on the spec's first cell: the largest micro-batch that fits, by doubling
    then bisection on real optimizer steps in this process; writes and returns capacity.json's
    document ("largest_fits", "safe_micro_batch_size", the trials). `memory_limit` as the option:
    "2GiB" caps this process's data segment (RLIMIT_DATA, for good: run it in a process of its own)."""
    from harness.training.capacity_job import run_capacity

    spec = _spec(spec, data, keywords)
    return run_capacity(spec.config, spec.cells, spec.sweep_dir, _folders(spec), margin, memory_limit, quiet)


def branch(spec: SweepSpec | Any = None, data: Any = None, *, points: int = 6, factors: tuple[float, ...] | None = None,
           branch_steps: int = 12, base_batch: int | None = None, threshold: float = 0.05, verify: bool = False,
           quiet: bool = True, **keywords: Any) -> dict:
    """`harness branch` on the spec's grid: B_crit over training from branches off a base run per seed,
    B_simple beside it, and the proposed batch schedule; writes and returns branch.json's document.
    `verify`: then train the proposal (one cell per seed) beside the grid and write the report; the
    comparison is the document's "verified" (analysis/schedules.py's rows)."""
    from harness.prediction import branching
    from harness.training.progress import Progress

    spec = _spec(spec, data, keywords)
    documents.check_one_config(spec.sweep_dir, spec.config, False, "or harness.sweep(..., force=True) first")
    results.check_writable(spec.sweep_dir)
    doc = branching.branch_sweep(spec.config, spec.cells, spec.sweep_dir, _folders(spec), Progress(True, quiet),
                                 points, factors or branching.FACTORS, branch_steps, base_batch, threshold)
    ramps = branching.ramp_cells(spec.config, spec.cells, doc) if verify else []
    if ramps:
        from harness.analysis.answer import answer
        from harness.analysis.collect import collect
        from harness.report.page import build_report
        from harness.training.sweep import run_sweep

        cells = spec.cells + ramps
        run_sweep(spec.config, cells, spec.sweep_dir, _folders(spec), quiet=quiet, all_cells=cells)
        build_report([spec.sweep_dir], spec.sweep_dir / "report.html")
        branching.record_grid_cost(spec.sweep_dir, doc)
        found = collect([spec.sweep_dir])
        doc["verified"] = answer(found, (found.cells["source"].iloc[0], found.cells["sweep"].iloc[0])).ramps
    return doc


def _spec(spec: SweepSpec | Any, data: Any, keywords: dict[str, Any]) -> SweepSpec:
    if not isinstance(spec, SweepSpec):  # the keyword route: spec is the model (or model= names it)
        model = keywords.pop("model") if spec is None and "model" in keywords else spec
        if model is None:
            raise TypeError("give a SweepSpec, or a model (and its data) with batch_sizes=[...]")
        return SweepSpec.from_keywords(model, data, **keywords)
    if data is not None or keywords:
        raise TypeError(f"a SweepSpec carries its own settings; pass it alone (got {', '.join(keywords) or 'data'})")
    return spec


def _folders(spec: SweepSpec) -> dict[str, Path] | None:
    from harness.training.images import data_folders

    return data_folders({c.settings.dataset for c in spec.cells}, spec.data_dir)


def _result(sweep_dir: Path, page: Path | None) -> SweepResult:
    from harness.analysis.answer import answer
    from harness.analysis.collect import collect

    found = collect([sweep_dir])
    got = answer(found, (found.cells["source"].iloc[0], found.cells["sweep"].iloc[0]))
    verdict = got.verdicts[0]
    return SweepResult(sweet_spot=verdict.batch_size, explanation=verdict.explanation, ties=verdict.ties,
                       notes=verdict.notes, per_batch=got.per_batch, report=page, results=sweep_dir)
