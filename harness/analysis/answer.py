"""One sweep's answer from its result files: the rules it is judged by (plan.json's, with any
overrides), each cell's time to target, the per-batch table at each batch size's picked rate, and
one recommendation per variant. The report renders it; `harness.sweep` returns it."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.analysis import per_batch, recommend
from harness.analysis.collect import Collected
from harness.config import ReportSettings


@dataclass(frozen=True)
class Answer:
    rules: ReportSettings
    plan: dict  # plan.json, or {} for a folder without one
    records: list[dict]  # its result.json documents
    cells: pd.DataFrame  # one row per cell, with its time to target
    epochs: pd.DataFrame
    checks: pd.DataFrame
    per_rate: pd.DataFrame  # per batch size and learning rate
    per_batch: pd.DataFrame  # per batch size at its picked rate, with intervals and win shares
    verdicts: list[recommend.Recommendation]  # one per variant


def answer(found: Collected, key: tuple[str, str], overrides: dict[str, float] | None = None) -> Answer:
    """The answer for one (results folder, sweep) of what `collect` found."""
    source, sweep = key
    records = [r for r in found.records if r["source"] == source and r["sweep"] == sweep]
    plan = found.plans.get(key, {})
    rules = report_rules(plan, records).model_copy(update=overrides or {})
    cells = of(found.cells, key)
    epochs, checks = of(found.epochs, key), of(found.checks, key)
    cells = per_batch.add_time_to_target(cells, checks, epochs, rules.target_accuracy)
    per_rate = per_batch.by_rate(cells)
    planned = sorted({c["swept"].get("train.batch_size") for c in plan.get("cells", [])} - {None})
    verdicts, by_batch = _verdicts(cells, per_rate, per_batch.timing_windows(checks, epochs), rules, lr_rule(plan),
                                   planned)
    return Answer(rules, plan, records, cells, epochs, checks, per_rate, by_batch, verdicts)


def _verdicts(cells: pd.DataFrame, per_rate: pd.DataFrame, windows: pd.DataFrame, rules: ReportSettings, lr_rule: str,
              planned: list[int]) -> tuple[list[recommend.Recommendation], pd.DataFrame]:
    """One recommendation per variant, and the per-batch table (picked rates, intervals)."""
    by_batch = per_batch.pick_rates(per_rate, rules.tolerance)
    if by_batch.empty:
        return ([recommend.Recommendation("", None, "No cell finished, so there is no sweet spot.")],
                recommend.add_intervals(by_batch, None))
    tuned = per_batch.tuned_cells(cells, by_batch)
    verdicts, tables = [], []
    for variant, group in by_batch.groupby("variant", sort=True):
        verdict, with_intervals = recommend.recommend(variant, group, tuned[tuned["variant"] == variant], windows,
                                                      rules, lr_rule, planned)
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
