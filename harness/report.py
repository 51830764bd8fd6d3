"""A results folder -> one self-contained HTML report. Reads only result files, never the trainer."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from harness import analysis, collapse, figures
from harness.collect import collect
from harness.config import ReportSettings
from harness.errors import ResultsError
from harness.metrics import Column, columns
from harness.results import write_atomic


MAX_COLLAPSE_FIGURES = 4  # curves for the first few collapsed cells; the table lists them all


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value, fmt: str) -> dict:
    """A table cell: the exact value for machines (data-value) and a formatted one for people."""
    if _is_missing(value):
        return {"text": "—", "value": ""}
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar -> Python
    if fmt == "bytes":
        text = f"{value / 2**20:,.1f} MiB"
    elif fmt == "us":  # a duration per image: readable microseconds, not 4.747e-04 s
        text = f"{value * 1e6:.4g} µs"
    elif fmt == "pct":
        text = f"{value:.1%}"
    elif fmt == "d":
        text = f"{int(value)}"
    else:
        text = format(value, fmt)
    return {"text": text, "value": value if isinstance(value, str) else json.dumps(value)}


def table(frame: pd.DataFrame, spec: list[Column]) -> dict:
    present = [c for c in spec if c.key in frame.columns and not (c.fmt == "s" and (frame[c.key] == "").all())]
    return {
        "headers": [c.header for c in present],
        "columns": [c.key for c in present],
        "rows": [[cell(row[c.key], c.fmt) for c in present] for _, row in frame.iterrows()],
    }


def build_report(folders: list[Path], out: Path, target: float | None = None, tolerance: float | None = None) -> list[str]:
    """Writes the HTML and, next to it, the tidy CSV of all cells; returns the warnings."""
    for folder in folders:
        if not folder.is_dir():
            raise ResultsError(f"{folder} is not a folder; pass a results folder such as results/default")
    found = collect(folders)
    if found.cells.empty:
        raise ResultsError(f"no result.json under {', '.join(map(str, folders))}; run a sweep first or check the path")
    keys = list(found.cells[["source", "sweep"]].drop_duplicates().itertuples(index=False, name=None))
    sections = [_section(found, key, target, tolerance) for key in keys]
    all_cells = pd.concat([s.pop("frame") for s in sections], ignore_index=True)
    per_batch = pd.concat([s.pop("per_batch_frame") for s in sections], ignore_index=True)
    scaling = analysis.scaling(per_batch)
    csv_path = out.with_suffix(".csv")
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True)
    html = env.get_template("report.html.j2").render(
        sections=sections, warnings=found.warnings, csv_name=csv_path.name,
        comparison=table(per_batch.sort_values(["batch_size", "source"]), columns("compare")) if len(sections) > 1 else None,
        scaling_figure=figures.scaling_figure(scaling))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, html)
    write_atomic(csv_path, all_cells.drop(columns=["first_step_losses"], errors="ignore").to_csv(index=False))
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return found.warnings


def _collapse_section(cells: pd.DataFrame, epochs: pd.DataFrame, drop: float, plan_config: dict | None) -> dict:
    """Did training collapse, and why? The flagged cells, the ablation, the verdict, the curves."""
    per_cell = collapse.per_cell(cells, epochs, drop)
    by_variant = collapse.rates(per_cell)
    found = collapse.collapses(per_cell, epochs) if not per_cell.empty else []
    ablation = (by_variant["variant"] == collapse.BASELINE).any() and len(by_variant) > 1
    return {
        "verdict": collapse.verdict(per_cell, by_variant, collapse.switches(plan_config), drop),
        "evidence": collapse.evidence(found),
        "cells": table(per_cell[per_cell["collapsed"]], columns("collapse")),
        "variants": table(by_variant, columns("variants")) if ablation else None,
        "figures": [figures.collapse_curves(epochs[epochs["cell_id"] == c.cell_id].sort_values("epoch"),
                                            c.cell_id, c.peak_epoch) for c in found[:MAX_COLLAPSE_FIGURES]],
        "not_drawn": max(0, len(found) - MAX_COLLAPSE_FIGURES),
    }


def _section(found, key: tuple[str, str], target: float | None, tolerance: float | None) -> dict:
    source, sweep = key
    records = [r for r in found.records if r["source"] == source and r["sweep"] == sweep]
    plan = found.plans.get((source, sweep), {})
    rules = report_rules(plan, records)
    target = rules.target_accuracy if target is None else target
    tolerance = rules.tolerance if tolerance is None else tolerance
    cells = found.cells[(found.cells["source"] == source) & (found.cells["sweep"] == sweep)]
    epochs = found.epochs
    if not epochs.empty:
        epochs = epochs[(epochs["source"] == source) & (epochs["sweep"] == sweep)]
    cells = analysis.add_time_to_target(cells, epochs, target)
    per_batch = analysis.by_batch_size(cells)
    verdict = analysis.sweet_spot(per_batch, tolerance, target)
    flat = {v: analysis.flat_point(g, rules.flat_threshold) for v, g in per_batch.groupby("variant")} if not per_batch.empty else {}
    done_ids = cells.loc[cells["status"] == "done", "cell_id"]
    done_epochs = epochs[epochs["cell_id"].isin(done_ids)] if not epochs.empty else epochs
    missing = [c for c in plan.get("cells", []) if c["id"] not in set(cells["cell_id"])]
    commands = sorted({r.get("environment", {}).get("command") for r in records} - {None})
    return {
        "title": f"{source} / {sweep}" if source != sweep else sweep,
        "device": records[0].get("environment", {}).get("device_name"),
        "verdict": verdict,
        "disagreement": analysis.rules_disagree(verdict, flat.get(verdict.variant)),
        "memory_limit": analysis.memory_limit(cells),
        "target": target, "tolerance": tolerance, "flat_threshold": rules.flat_threshold, "flat": flat,
        "per_batch": table(per_batch, columns("batch")),
        "cells": table(cells.sort_values(["batch_size", "seed", "cell_id"]), columns("cells")),
        "collapse_drop": rules.collapse_drop,
        "collapse": _collapse_section(cells, epochs, rules.collapse_drop, plan.get("config")),
        "unfinished": cells[cells["status"] != "done"][["cell_id", "status", "error"]].to_dict("records"),
        "missing": missing,
        "figures": figures.render_all(figures.FigureData(done_epochs, per_batch, verdict.batch_size)),
        "environment": sorted((k, v) for k, v in records[0].get("environment", {}).items() if k != "command"),
        "config": yaml.safe_dump(plan.get("config") or records[0].get("settings", {}), sort_keys=False),
        "commands": commands,
        "swept": sorted({k for r in records for k in r.get("swept", {})}),
        "frame": cells, "per_batch_frame": per_batch,
    }


def report_rules(plan: dict, records: list[dict]) -> ReportSettings:
    """The sweep's report rules: from its plan.json config; a folder without one (schema 1
    records carried the rules) falls back to the first record's, else to the defaults."""
    rules = (plan.get("config") or {}).get("report") or records[0].get("report") or {}
    return ReportSettings(**rules)
