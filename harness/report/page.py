"""A results folder -> one self-contained HTML report. Reads only result files, never the trainer."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from harness import checks
from harness.analysis import collapse, conditions, per_batch, recommend, stats
from harness.analysis.answer import answer, headlines, next_step
from harness.analysis.collect import Collected, collect, oriented, quality_of
from harness.config import CheckSettings
from harness.errors import ConfigError, ResultsError
from harness.quality import Quality
from harness.record.metrics import Column, columns
from harness.record.results import refuse_special, write_atomic
from harness.report import figures, ramps
from harness.report.collapse_figure import collapse_curves

MAX_COLLAPSE_FIGURES = 4  # curves for the first few collapsed cells; the table lists them all


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def table_entry(value, fmt: str) -> dict:
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
    elif fmt == "yesno":
        text = "yes" if value else "no"
    elif fmt == "auto":  # a number the registry does not describe: as recorded
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = format(value, ".4g") if number else str(value)[:40]
    else:
        text = format(value, fmt)
    return {"text": text, "value": value if isinstance(value, str) else json.dumps(value)}


def _has_values(series: pd.Series) -> bool:
    # element by element: on an empty frame pandas 3 with pyarrow keeps the str dtype through map(),
    # and str | bool raises
    return any(not _is_missing(v) and v != "" for v in series)


def rendered_table(frame: pd.DataFrame, spec: list[Column], quality: Quality | None = None,
                   unit: str = "image") -> dict:
    """Rows for the template; a column with nothing recorded in any row (no GPU: no NVML) is left out.
    `quality`: the workload's metric, named in the headers written for accuracy ("acc"); `unit`:
    what one example is called, in the headers written for images."""
    present = [c for c in spec if c.key in frame.columns and _has_values(frame[c.key])]
    rename = quality is not None and not quality.bounded

    def header(text: str) -> str:
        text = re.sub(r"\bacc\b", quality.name, text) if rename else text
        return re.sub(r"\bimage(s?)\b", rf"{unit}\1", text) if unit != "image" else text

    return {
        "headers": [header(c.header) for c in present],
        "columns": [c.key for c in present],
        "rows": [[table_entry(row[c.key], c.fmt) for c in present] for _, row in frame.iterrows()],
    }


INPUT_BOUND = 0.2  # a share of the timed steps' wall time spent waiting for input


@dataclass(frozen=True)
class Built:
    warnings: list[str]
    answers: dict[tuple[str, str], list[dict]]  # (folder label, sweep) -> one headline per variant


def build_report(folders: list[Path], out: Path, target: float | None = None, tolerance: float | None = None) -> Built:
    """Writes the HTML and, next to it, the tidy CSV of all cells; returns each sweep's answer (the
    headlines of analysis/answer.py, by folder and sweep) and the warnings."""
    for target_file in (out, out.with_suffix(".csv")):  # refused before the rendering, not after
        refuse_special(target_file, "-o")
    for folder in folders:
        if not folder.is_dir():
            raise ResultsError(f"{folder} is not a folder; pass a results folder such as results/default")
    found = collect(folders)
    if found.cells.empty:
        skipped = f" (and {len(found.warnings)} skipped: {found.warnings[0]})" if found.warnings else ""
        raise ResultsError(f"no result.json under {', '.join(map(str, folders))}{skipped}; run a sweep first "
                           f"or check the path")
    if target is not None:
        _check_on_the_scale(found, target)
        _check_reachable(found, target)
    keys = list(found.cells[["source", "sweep"]].drop_duplicates().itertuples(index=False, name=None))
    overrides = {k: v for k, v in (("target_accuracy", target), ("tolerance", tolerance)) if v is not None}
    sections = [_section(found, key, overrides) for key in keys]
    all_cells = pd.concat([section.pop("frame") for section in sections], ignore_index=True)
    if len(sections) > 1:  # side by side, folders must have been timed alike too
        unlike = conditions.caveat_text(conditions.differing(all_cells), "The folders compared here")
        found.warnings.extend([unlike] if unlike else [])
    frames = [section.pop("per_batch_frame") for section in sections if not section["per_batch_frame"].empty]
    by_batch = pd.concat(frames or [pd.DataFrame(columns=[*per_batch.GROUP, "num_processes", "time_per_image_s"])],
                         ignore_index=True)
    scaling = per_batch.scaling(by_batch)
    csv_path = out.with_suffix(".csv")
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"), autoescape=True)
    compared = rendered_table(by_batch.sort_values(["batch_size", "source"]), columns("compare")) \
        if len(sections) > 1 else None
    html = env.get_template("report.html.j2").render(
        sections=sections, warnings=found.warnings, csv_name=csv_path.name, resamples=stats.RESAMPLES,
        comparison=compared,
        scaling_figure=figures.scaling_figure(scaling))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"-o {out}: cannot create the folder {out.parent} ({exc.strerror or exc}); choose another "
                           f"-o") from None
    write_atomic(out, html, option="-o")
    write_atomic(csv_path, all_cells.drop(columns=["first_step_losses"], errors="ignore").to_csv(index=False),
                 option="-o")
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return Built(found.warnings, {key: section["headlines"] for key, section in zip(keys, sections)})


def _check_on_the_scale(found: Collected, target: float) -> None:
    """--target in (0, 1] for an accuracy; any finite number for a named metric."""
    quality = quality_of(found.records)
    if quality.bounded and not 0 < target <= 1:
        raise ConfigError(f"--target {target}: the metric ({quality.name}) is a score in [0, 1]: give a target "
                          f"greater than 0 and at most 1; pass e.g. --target 0.97")


def _check_reachable(found: Collected, target: float) -> None:
    """A --target no cell reached makes every time to target unknown: say so before writing."""
    quality = quality_of(found.records)
    readings = per_batch.readings(*(oriented(f, quality) for f in (found.checks, found.epochs)))
    best = readings["val_accuracy"].max() if not readings.empty else None
    if best is None or not best >= quality.oriented(target):
        recorded = best is not None and best == best  # not None, not NaN
        seen = f"the best validation {quality.name} recorded is {quality.show(quality.oriented(best))}" if recorded \
            else "none recorded"
        easier = "lower" if quality.higher_is_better else "raise"
        raise ConfigError(f"--target {target}: no cell reached it ({seen}); {easier} --target")


def _collapse_not_judged(quality: Quality) -> dict:
    return {"judged": False, "verdict": f"Not judged: a collapse is a fall in test accuracy of more than "
                                        f"report.collapse_drop from its peak, and this sweep's metric is "
                                        f"{quality.name} ({quality.direction}). Each cell's curves are in its "
                                        f"epochs.csv; diverged cells are listed below."}


def _collapse_section(cells: pd.DataFrame, epochs: pd.DataFrame, drop: float, plan_config: dict | None) -> dict:
    """Did training collapse, and why? The flagged cells, the ablation, the verdict, the curves."""
    per_cell = collapse.per_cell(cells, epochs, drop)
    by_variant = collapse.variant_rates(per_cell)
    found = collapse.collapses(per_cell, epochs) if not per_cell.empty else []
    ablation = (by_variant["variant"] == collapse.BASELINE).any() and len(by_variant) > 1
    return {
        "judged": True,
        "verdict": collapse.verdict(per_cell, by_variant, collapse.switches(plan_config), drop),
        "evidence": collapse.evidence(found),
        "cells": rendered_table(per_cell[per_cell["collapsed"]], columns("collapse")),
        "variants": rendered_table(by_variant, columns("variants")) if ablation else None,
        "figures": [collapse_curves(epochs[epochs["cell_id"] == c.cell_id].sort_values("epoch"),
                                            c.cell_id, c.peak_epoch) for c in found[:MAX_COLLAPSE_FIGURES]],
        "not_drawn": max(0, len(found) - MAX_COLLAPSE_FIGURES),
    }


def _with_retime(summary: str | None, retime: dict | None) -> str | None:
    """The first screen's timing line, saying where the seconds per step came from when re-timed."""
    if not retime:
        return summary
    env = retime.get("environment") or {}
    said = (f"seconds per step re-timed by harness retime on {env.get('device_name') or 'an unnamed device'}, "
            f"{retime.get('created_utc', '')[:10]} (each cell's steps from its own run)")
    return f"{summary}; {said}" if summary else said


def _section(found: Collected, key: tuple[str, str], overrides: dict[str, float] | None = None) -> dict:
    """One results folder's sweep: its rules (plan.json's, with the command line's overrides), its
    verdicts, tables and figures."""
    source, sweep = key
    got = answer(found, key, overrides)
    rules, plan, records, cells, epochs, checks = got.rules, got.plan, got.records, got.cells, got.epochs, got.checks
    verdicts, by_batch, per_rate = got.verdicts, got.per_batch, got.per_rate
    tuned = per_batch.tuned_cells(cells, by_batch)["cell_id"]  # each batch size at its picked rate
    missing = [c for c in plan.get("cells", []) if c["id"] not in set(cells["cell_id"])]
    commands = sorted({r.get("environment", {}).get("command") for r in records} - {None})
    spots = {r.variant: r.batch_size for r in verdicts}
    unregistered = [Column(key, f"{key} (unregistered)", "auto") for key in found.unregistered]
    prediction = found.predictions.get(key)
    drawn = figures.FigureData(epochs=_only(epochs, tuned), checks=_only(checks, tuned), table=by_batch,
                               sweet_spots=spots, target=rules.target_accuracy,
                               prediction=prediction, ties={r.variant: r.ties for r in verdicts}, quality=got.quality,
                               unit=got.unit, capacity=found.capacities.get(key), ramps=got.ramps)
    return {
        "title": f"{source} / {sweep}" if source != sweep else sweep,
        "device": records[0].get("environment", {}).get("device_name"),
        "conditions": _with_retime(conditions.summary(cells), found.retimes.get(key)),
        "validation": _validation(records),
        "engine_sentence": conditions.engine_sentence(spots),
        "verdicts": verdicts,
        # an ablation (every variant one batch size): its question is the collapse, not a sweet spot
        "ablation_first": len(verdicts) > 1 and by_batch.groupby("variant")["batch_size"].nunique().max() == 1,
        "memory_limit": per_batch.memory_limit(cells),
        "accumulation": _accumulation(verdicts, by_batch, found.capacities.get(key)),
        "input_bound": input_bound(by_batch),
        "ramp_first": ramps.first_screen(got.ramps), "ramps": [ramps.words(r) for r in got.ramps],
        "target": rules.target_accuracy, "tolerance": rules.tolerance, "flat_threshold": rules.flat_threshold,
        "check_spacing": _check_spacing(plan),
        "per_batch": rendered_table(by_batch, columns("batch"), got.quality, got.unit),
        "per_rate": rendered_table(per_rate.sort_values(GROUP_RATE), columns("rates"), got.quality, got.unit)
        if (by_batch["rates_tried"] > 1).any() else None,
        "cells": rendered_table(cells.sort_values(["variant", "batch_size", "learning_rate", "seed", "cell_id"]),
                                columns("cells") + unregistered, got.quality, got.unit),
        "collapse_drop": rules.collapse_drop,
        "collapse": _collapse_section(cells, epochs, rules.collapse_drop, plan.get("config")) if got.quality.bounded
        else _collapse_not_judged(got.quality),
        "metric": got.quality.name, "direction": got.quality.direction, "reaching": got.quality.reaching,
        "unit": got.unit,
        "unfinished": cells[cells["status"] != "done"][["cell_id", "status", "error"]].to_dict("records"),
        "missing": missing,
        "prediction": _prediction(prediction, by_batch, cells, verdicts) if prediction else None,
        "first_figure": figures.time_to_target(drawn),
        "figures": figures.render_all(drawn),
        "environment": sorted((k, v) for k, v in records[0].get("environment", {}).items() if k != "command"),
        "config": yaml.safe_dump(plan.get("config") or records[0].get("settings", {}), sort_keys=False),
        "commands": commands,
        "swept": sorted({k for r in records for k in r.get("swept", {})}),
        "frame": cells, "per_batch_frame": by_batch, "headlines": headlines(got),
        "next_steps": [next_step(v, plan) for v in verdicts],
    }


GROUP_RATE = [*per_batch.GROUP, "learning_rate"]


def _accumulation(verdicts, by_batch: pd.DataFrame, capacity: dict | None) -> str | None:
    """One sentence where the first sweet spot ran as accumulated micro-batches on this device."""
    spot = verdicts[0].batch_size if verdicts else None
    rows = by_batch[(by_batch["batch_size"] == spot) & (by_batch["accumulation_steps"].fillna(1) > 1)]
    if spot is None or rows.empty:
        return None
    micro, steps = int(rows["micro_batch_size"].iloc[0]), int(rows["accumulation_steps"].iloc[0])
    processes = spot // (micro * steps)
    per = f" on each of {processes} processes" if processes > 1 else ""
    why = "" if capacity is None or capacity["bounded_by_need"] else (
        f": {capacity['safe_micro_batch_size']} is the largest that fits with the {capacity['margin']:.0%} margin "
        f"({capacity['largest_fits']} fitted, {capacity['first_fails']} did not, {capacity['device']})")
    return f"The sweet spot needs accumulation here: batch {spot} = {steps} x {micro} micro-batches{per}{why}."


def input_bound(by_batch: pd.DataFrame) -> str | None:
    """Where the steps waited for the loader more than INPUT_BOUND of their wall time, in one sentence:
    there the time per example measures the input pipeline, not the model."""
    if "input_wait_share" not in by_batch:
        return None
    bound = by_batch[by_batch["input_wait_share"] > INPUT_BOUND]
    if bound.empty:
        return None
    sizes = sorted(set(bound["batch_size"].astype(int)))
    every = sorted(set(by_batch.loc[by_batch["input_wait_share"].notna(), "batch_size"].astype(int)))
    where = f"<= {sizes[-1]}" if sizes == every[:len(sizes)] else ", ".join(map(str, sizes))
    worst = float(bound["input_wait_share"].max())
    return (f"Input-bound at batch {where}: those steps waited for the DataLoader more than {INPUT_BOUND:.0%} of "
            f"their time (up to {worst:.0%}), so their time per example is the input pipeline's, not the model's; "
            f"raise data.workers or make the Dataset's items cheaper.")


def _prediction(doc: dict, by_batch: pd.DataFrame, cells: pd.DataFrame,
                verdicts: list[recommend.Recommendation]) -> dict:
    """harness predict's answer beside the grid's, and what each cost in training seconds."""
    done = cells[cells["status"] == "done"]
    grid_seconds = float(done["train_seconds"].fillna(0).sum() + done["warmup_seconds"].fillna(0).sum())
    spent = doc["cost"]["train_seconds"]
    whole = set(doc["inputs"].get("grid_cells") or [None]) <= set(done["cell_id"])  # every cell of the grid done
    return {
        "whole_grid": whole, "done_cells": len(done),
        "spot": (doc.get("sweet_spot") or {}).get("batch_size"), "measured": verdicts[0].batch_size,
        "failure": doc.get("failure"), "fit": doc.get("fit"), "b_simple": doc.get("b_simple"),
        "doubts": [d["text"] for d in doc.get("doubts", [])],
        "lr_source": doc["inputs"]["learning_rate_source"], "short_runs": doc["inputs"]["short_run_batch_sizes"],
        "spent": spent, "grid_seconds": grid_seconds if len(done) else None,
        "share": spent / grid_seconds if len(done) and grid_seconds > 0 else None,
        "table": rendered_table(per_batch.against_prediction(doc, by_batch), columns("prediction")),
    }


def _only(frame: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    return frame[frame["cell_id"].isin(ids)] if not frame.empty else frame


def _validation(records: list[dict]) -> str:
    """The validation split the cells were read on, in words: the workload's own, or which
    training examples were held out (data.val_split)."""
    own = sorted({s.get("val_examples") for r in records for s in [r.get("summary") or {}]
                  if s.get("validation_split") == "workload"}, key=str)
    held = sorted({(d.get("val_size"), d.get("val_split", "first"), d.get("split_seed"))
                   for r in records for d in [(r.get("settings") or {}).get("data") or {}]
                   if (r.get("summary") or {}).get("validation_split") != "workload"}, key=str)
    words = []
    for size, how, seed in held:
        count = f"{size:,}" if isinstance(size, int) else "?"
        words.append(f"a random {count} (data.split_seed={seed or 0})" if how == "random" else f"the {how} {count}")
    parts = [f"{' and '.join(words)} of the training examples"] if words else []
    if own:
        sizes = " and ".join(f"{n:,}" if isinstance(n, int) else "?" for n in own)
        parts.append(f"the workload's own 'val' split ({sizes} examples)")
    return f"validation: {'; '.join(parts)}"


def _check_spacing(plan: dict) -> str:
    """How far apart the sweep's validation checks lie, relative to where each gap starts."""
    per_decade = ((plan.get("config") or {}).get("checks") or {}).get("per_decade", CheckSettings().per_decade)
    return f"at most {checks.relative_resolution(per_decade):.1%} of the step where it starts: {per_decade} per decade"
