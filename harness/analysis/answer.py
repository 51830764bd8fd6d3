"""One sweep's answer from its result files: the rules it is judged by (plan.json's, with any
overrides), each cell's time to target, the per-batch table at each batch size's picked rate, and
one recommendation per variant. The report renders it; `harness.sweep` returns it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from harness.analysis import per_batch, recommend, schedules
from harness.analysis.collect import Collected, oriented, quality_of, unit_of_records
from harness.config import ReportSettings
from harness.paths import DEFAULT_CONFIG
from harness.quality import Quality


@dataclass(frozen=True)
class Answer:
    rules: ReportSettings
    quality: Quality  # the metric the target and the sweet spot are read on, its name and direction
    unit: str  # what one example is called (image, example, sequence, token...)
    plan: dict  # plan.json, or {} for a folder without one
    records: list[dict]  # its result.json documents
    cells: pd.DataFrame  # one row per cell, with its time to target
    epochs: pd.DataFrame
    checks: pd.DataFrame
    per_rate: pd.DataFrame  # per batch size and learning rate
    per_batch: pd.DataFrame  # per batch size at its picked rate, with intervals and win shares
    verdicts: list[recommend.Recommendation]  # one per variant
    ramps: list[dict] = field(default_factory=list)  # batch schedules against the best fixed batch (schedules.py)


def answer(found: Collected, key: tuple[str, str], overrides: dict[str, float] | None = None) -> Answer:
    """The answer for one (results folder, sweep) of what `collect` found."""
    source, sweep = key
    records = [r for r in found.records if r["source"] == source and r["sweep"] == sweep]
    plan = found.plans.get(key, {})
    rules = report_rules(plan, records).model_copy(update=overrides or {})
    quality = quality_of(records)
    # computed where higher is better (a min metric negated), then shown back in the metric's units
    cells, epochs, checks = (oriented(of(frame, key), quality) for frame in (found.cells, found.epochs, found.checks))
    judged = rules.model_copy(update={"target_accuracy": quality.oriented(rules.target_accuracy)})
    cells, windows = per_batch.retimed(cells, per_batch.timing_windows(checks, epochs), found.retimes.get(key))
    cells = per_batch.add_time_to_target(cells, checks, epochs, judged.target_accuracy)
    # a ramp is compared whole (analysis/schedules.py), by its clock
    ramp = cells.get("batch_schedule", pd.Series(None, index=cells.index, dtype=object)).notna()
    cells.loc[ramp, "time_to_target_s"] = schedules.clock_to_target(cells[ramp], checks)
    per_rate = per_batch.by_rate(cells[~ramp])
    planned = sorted({c["swept"].get("train.batch_size") for c in plan.get("cells", [])} - {None})
    verdicts, by_batch = _verdicts(cells[~ramp], per_rate, windows, judged, lr_rule(plan), planned, quality,
                                   unit_of_records(records))
    ramps = schedules.compare(cells, checks, found.retimes.get(key)) if ramp.any() else []
    back = partial(oriented, quality=quality)
    return Answer(rules=rules, quality=quality, unit=unit_of_records(records), plan=plan, records=records,
                  cells=back(cells), epochs=back(epochs),
                  checks=back(checks), per_rate=back(per_rate), per_batch=back(by_batch), verdicts=verdicts,
                  ramps=ramps)


def _verdicts(cells: pd.DataFrame, per_rate: pd.DataFrame, windows: pd.DataFrame, rules: ReportSettings, lr_rule: str,
              planned: list[int], quality: Quality,
              unit: str = "image") -> tuple[list[recommend.Recommendation], pd.DataFrame]:
    """One recommendation per variant, and the per-batch table (picked rates, intervals)."""
    by_batch = per_batch.pick_rates(per_rate, rules.tolerance)
    if by_batch.empty:
        return ([recommend.Recommendation(variant="", batch_size=None,
                                          explanation="No cell finished, so there is no sweet spot.")],
                recommend.add_intervals(by_batch, None))
    tuned = per_batch.tuned_cells(cells, by_batch)
    verdicts, tables = [], []
    for variant, group in by_batch.groupby("variant", sort=True):
        verdict, with_intervals = recommend.recommend(variant, group, tuned[tuned["variant"] == variant], windows,
                                                      rules, lr_rule, planned, quality, unit)
        verdicts.append(verdict)
        tables.append(with_intervals)
    return verdicts, pd.concat(tables, ignore_index=True).sort_values(per_batch.GROUP, ignore_index=True)


def of(frame: pd.DataFrame, key: tuple[str, str]) -> pd.DataFrame:
    """The rows of one (results folder, sweep)."""
    if frame.empty:
        return frame
    return frame[(frame["source"] == key[0]) & (frame["sweep"] == key[1])]


def lr_rule(plan: dict) -> str:
    """How the sweep set each batch size's learning rate, in words."""
    optim = (plan.get("config") or {}).get("optim") or {}
    rule, lr, ref = optim.get("lr_scaling", "none"), optim.get("lr"), optim.get("lr_reference_batch")
    if rule == "none":
        return f"optim.lr={lr} for every batch size" if lr is not None else "the config's rate"
    return f"optim.lr={lr} at batch {ref}, scaled {rule} with the batch size"


def report_rules(plan: dict, records: list[dict]) -> ReportSettings:
    """The sweep's report rules: from its plan.json config; a folder without one (schema 1
    records carried the rules) falls back to the first record's, else to the defaults."""
    rules = (plan.get("config") or {}).get("report") or records[0].get("report") or {}
    return ReportSettings(**rules)


def headlines(got: Answer) -> list[dict]:
    """The answer per variant as plain data: what `--json` prints and `line` words."""
    table = got.per_batch
    out = []
    for verdict in got.verdicts:
        rows = table[table["variant"] == verdict.variant] if not table.empty else table
        found = rows[rows["batch_size"] == verdict.batch_size]
        best = found.iloc[0] if verdict.batch_size is not None and not found.empty else None
        number = partial(_number, best)
        out.append({"variant": verdict.variant or None, "sweet_spot": verdict.batch_size, "tied_with": verdict.ties,
                    "batch_sizes": sorted(int(b) for b in rows["batch_size"]) if not rows.empty else [],
                    "target": got.rules.target_accuracy, "metric": got.quality.name, "metric_mode": got.quality.mode,
                    "time_to_target_s": number("time_to_target_s"),
                    "interval_s": [number("time_to_target_low_s"), number("time_to_target_high_s")],
                    "steps_to_target": number("steps_to_target"),
                    "seeds": int(rows["n"].max()) if not rows.empty else 0,
                    "learning_rate_tuned": bool(not rows.empty and (rows["rates_tried"] > 1).any()),
                    **_failures(got.cells, verdict.variant)})
    return out


def _failures(cells: pd.DataFrame, variant: str) -> dict:
    """How many of a variant's cells failed, of how many, and the first one's error."""
    if cells.empty:
        return {"cells": 0, "cells_failed": 0, "first_error": None}
    mine = cells[cells["variant"].fillna("") == (variant or "")] if "variant" in cells else cells
    failed = mine[mine["status"] == "failed"].sort_values(["batch_size", "seed"])
    first = None if failed.empty else f"{failed.iloc[0]['cell_id']}: {failed.iloc[0]['error']}"
    return {"cells": len(mine), "cells_failed": len(failed), "first_error": first}


def _number(row: pd.Series | None, key: str) -> float | None:
    """A per-batch number of the sweet spot's row; None where there is no row or no value."""
    return None if row is None or pd.isna(row[key]) else float(row[key])


def line(headline: dict, report: str | None = None) -> str:
    """One line: `sweet spot: batch 128 (tied with 64): 0.97 val in 1.8 s [1.7-1.9] | 1 seed, lr not
    tuned | report: results/default/report.html`, or why there is none and what to change."""
    h = headline
    low, high = h["interval_s"]
    spread = f" [{low:.3g}-{high:.3g}]" if low is not None and high is not None else ""
    if h["sweet_spot"] is None and h.get("cells") and h.get("cells_failed") == h["cells"]:
        text = f"no sweet spot: every cell failed ({h['cells']} of {h['cells']}); the first: {h['first_error']}"
    elif h["sweet_spot"] is None:
        easier = "raise report.target" if h.get("metric_mode") == "min" else "lower report.target_accuracy"
        text = (f"no sweet spot: no batch size reached {h['target']:g} validation {h.get('metric', 'accuracy')} in "
                f"every seed; raise train.epochs or {easier}")
    elif len(h["batch_sizes"]) == 1:  # nothing to choose between: say what the one batch size did
        text = f"one batch size ({h['sweet_spot']}): {h['target']:g} val in {h['time_to_target_s']:.3g} s{spread}"
    else:
        tied = f" (tied with {', '.join(map(str, h['tied_with']))})" if h["tied_with"] else ""
        text = (f"sweet spot: batch {h['sweet_spot']}{tied}: {h['target']:g} val in {h['time_to_target_s']:.3g} "
                f"s{spread}")
    tuned = "tuned per batch size" if h["learning_rate_tuned"] else "not tuned"
    notes = f"{h['seeds']} seed{'s' * (h['seeds'] != 1)}, lr {tuned}"
    prefix = f"{h['variant']}: " if h["variant"] else ""
    return f"{prefix}{text} | {notes}" + (f" | report: {report}" if report else "")


def next_step(verdict: recommend.Recommendation, plan: dict, caveats: int = 3) -> str | None:
    """A command to copy for what the heaviest caveats on the first screen call for: more seeds, a
    learning-rate grid, a wider batch grid, the folder re-timed (its cells timed on a busy machine);
    None where none of them says what to run."""
    config = plan.get("config") or {}
    base = _base_command(plan)
    for caveat in verdict.caveats[:caveats]:
        if caveat.next_step is not None and caveat.next_step.retime:
            return f"harness retime {shlex.quote(str(Path(_results_dir(plan) or 'results') / plan.get('sweep', '')))}"
        change = _set_for(caveat.next_step, config)
        if change:
            return f"{base} --set '{change}'" if base else _in_python(change)
    return None


def _command_words(plan: dict) -> list[str]:
    """The words of the command the sweep was planned with (none where they do not parse)."""
    try:
        return shlex.split(plan.get("command") or "")
    except ValueError:
        return []


def _results_dir(plan: dict) -> str | None:
    """The --results-dir the planning command named, if it named one."""
    words = _command_words(plan)
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--results-dir"), None) or next(
        (w.split("=", 1)[1] for w in words if w.startswith("--results-dir=")), None)


def _in_python(change: str) -> str:
    """The change for a sweep run from Python (harness.sweep): the same call, with it in `settings`."""
    key, value = change.split("=", 1)
    section, rest = key.split(".", 1)
    return f'the same harness.sweep(...) call with settings={{"{section}": {{"{rest}": {value}}}}}'


def _set_for(follow: recommend.FollowUp | None, config: dict) -> str | None:
    """The --set value a caveat's follow-up asks for; None where the config gives no rate to start from."""
    if follow is None or follow.lr_grid is None:
        return follow.setting if follow else None
    lr = (config.get("optim") or {}).get("lr")
    if not isinstance(lr, (int, float)):
        return None
    tried = sorted(float(x) for x in (config.get("sweep") or {}).get("optim.lr", []) if isinstance(x, (int, float)))
    if follow.lr_grid == "around" or not tried:
        rates = [lr / 2, lr, lr * 2]
    else:
        rates = [*tried, 2 * tried[-1]] if follow.lr_grid == "upwards" else [tried[0] / 2, *tried]
    return f"sweep.optim.lr=[{','.join(f'{r:g}' for r in rates)}]"


def _base_command(plan: dict) -> str | None:
    """`harness run --config X` with the --set options the sweep was planned with; None for a
    sweep planned from Python (harness.sweep), which has no config file to name."""
    words = _command_words(plan)
    config = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--config"), None)
    if config is None and words and words[:2] != ["harness", "run"]:
        return None
    sets = [f"--set {shlex.quote(words[i + 1])}" for i, w in enumerate(words[:-1]) if w == "--set"]
    return " ".join(["harness run", f"--config {shlex.quote(config or DEFAULT_CONFIG)}", *sets])
