"""A validated sweep -> the ordered list of cells, each with a stable id; and which cells to run.

The order is the product of the sweep's keys in the order the config lists them, so a Slurm
array index names the same cell on every machine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from harness import workload
from harness.config import CellSettings, SweepConfig, describe
from harness.errors import ConfigError
from harness.renamed import RENAMED

# readable slug prefixes for the keys users sweep most; other keys use their last name part
# (a renamed setting keeps its old slug: config.RENAMED)
SLUG_NAMES = {"train.batch_size": "bs", "train.seed": "seed", "train.mode": "", "train.untimed_steps": "warmup_steps"}

MAX_CELLS = 10_000  # a sweep trains a model per cell: more is a mistake, or several sweeps


@dataclass(frozen=True)
class Cell:
    index: int
    id: str
    settings: CellSettings
    swept: dict[str, Any]
    # the workload's identity and where its code was found (harness/workload.py); None: the default
    workload: dict[str, Any] | None = None

    @property
    def batch_size(self) -> int:
        return self.settings.train.batch_size


# Settings a cell id's hash leaves out while they hold this value: a setting added to CellSettings
# goes here with its default, so that every cell planned without it keeps its id.
ADDED_LATER = {("data", "dataset"): "mnist", ("train", "threads"): None, ("data", "val_split"): "first",
               ("data", "split_seed"): None, ("train", "diagnostics"): "full", ("optim", "nesterov"): False,
               ("optim", "schedule"): "constant", ("optim", "lr_warmup_steps"): 0, ("optim", "lr_warmup_fraction"): 0.0,
               ("optim", "lr_final_fraction"): 0.0,
               ("train", "diagnostics_budget"): 0.05, ("train", "micro_batch_size"): None,
               ("data", "input"): "device", ("data", "workers"): 0, ("train", "batch_schedule"): None,
               ("train", "batch_schedule_unit"): "steps"}
# Values a cell id's hash reads as another: `auto` runs eager on every CPU and wherever graphs cannot
# run, so it names the eager cell; on a GPU the record says it ran cuda_graphs, and the report says when modes differ.
HASHED_AS = {("train", "mode"): {"auto": "eager"}}


def cell_id(settings: CellSettings, swept_keys: list[str], variant: str | None = None,
            workload_identity: dict[str, Any] | None = None) -> str:
    """`<slug>-<hash8>`: the hash covers every setting, so equal settings give equal ids anywhere.
    The workload counts through its identity (workload.identity: callables and their source, not
    where the files lie); the default workload, the MNIST MLP, not at all."""
    dumped = settings.model_dump(mode="json")
    dumped["data"]["dataset"] = settings.dataset or dumped["data"]["dataset"]  # fashion_mlp: Fashion-MNIST
    for (group, field), value in ADDED_LATER.items():
        if dumped[group].get(field) == value:
            del dumped[group][field]
    for (group, field), same in HASHED_AS.items():
        dumped[group][field] = same.get(dumped[group][field], dumped[group][field])
    for old_key, new_key in RENAMED.items():  # a renamed setting hashes under its old name: ids stay
        (group, old_field), new_field = old_key.split("."), new_key.split(".")[1]
        dumped[group][old_field] = dumped[group].pop(new_field)
    del dumped["workload"]
    if workload_identity is not None:
        dumped["workload"] = workload.hashed(workload_identity)
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    always = ["train.batch_size", "train.seed"]
    keys = always + [k for k in swept_keys if k not in always]
    parts = [f"{SLUG_NAMES.get(k, k.rsplit('.', 1)[-1])}{_slug_value(get_setting(settings, k))}" for k in keys]
    if variant is not None:
        parts.append(_slug_value(variant))
    return "-".join(parts + [digest])


def _slug_value(value: Any) -> str:
    text = "_".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text)[:24]


def get_setting(settings: CellSettings, key: str) -> Any:
    group, field, *option = key.split(".")
    value = getattr(getattr(settings, group), field)
    return value.get(option[0]) if option else value


def expand(config: SweepConfig) -> list[Cell]:
    """Every variant (if any) x every combination of the swept values, validated; ConfigError
    names the bad value. A variant's cells record it as swept["variant"]. A grid of more than
    MAX_CELLS cells is refused before one is built: each cell trains a model, and a plan of 10^6
    cells would take minutes and gigabytes only to list them."""
    keys = list(config.sweep)
    variants = config.variants.items() if config.variants else [(None, {})]
    count = len(variants) * math.prod(len(config.sweep[k]) for k in keys)
    if count > MAX_CELLS:
        raise ConfigError(f"sweep: {count:,} cells ({' x '.join(str(len(config.sweep[k])) for k in keys)}"
                          f"{f' x {len(variants)} variants' if config.variants else ''}); a sweep may have at most "
                          f"{MAX_CELLS:,}: split it into several configs")
    cells: list[Cell] = []
    seen: dict[str, dict] = {}
    identities: dict[str, dict[str, Any] | None] = {}  # one look at the files per distinct workload
    for variant, overrides in variants:
        ramp = "train.batch_schedule" in overrides  # its own batches: crossed with every swept key but the batch
        for combo in itertools.product(*(config.sweep[k] for k in keys)):
            assignments = {**overrides, **dict(zip(keys, combo))}
            if ramp:
                assignments.pop("train.batch_size", None)
            settings = _validated(config, assignments, variant)
            key = settings.workload.model_dump_json()
            if key not in identities:
                identities[key] = workload.identity(settings.workload, config.base_dir)
            cid = cell_id(settings, keys, variant, identities[key])
            swept = {k: get_setting(settings, k) for k in keys} | ({"variant": variant} if variant else {})
            if cid in seen and ramp:
                continue
            if cid in seen:
                raise ConfigError(f"sweep lists the same cell twice ({seen[cid]} and {swept}); remove the repeat")
            seen[cid] = swept
            cells.append(Cell(index=len(cells), id=cid, settings=settings, swept=swept, workload=identities[key]))
    _check_often_enough(config, cells)
    return cells


def _check_often_enough(config: SweepConfig, cells: list[Cell]) -> None:
    """Every epoch end is a check, so a cap on the interval above one epoch would be a lie."""
    cap = config.checks.max_interval_steps
    sized = [c for c in cells if c.settings.size_known]  # the user's own data: checked once loaded
    if cap is None or not sized:
        return
    shortest = min(sized, key=lambda c: c.settings.steps_per_epoch)
    if cap > shortest.settings.steps_per_epoch:
        raise ConfigError(f"checks.max_interval_steps={cap} would check less often than once per epoch (batch "
                          f"{shortest.batch_size} has {shortest.settings.steps_per_epoch} steps per epoch); set it "
                          f"to at most {shortest.settings.steps_per_epoch} or remove it")


def _validated(config: SweepConfig, assignments: dict[str, Any], variant: str | None) -> CellSettings:
    raw = config.base_settings().model_dump(mode="json")
    if "train.batch_schedule" in assignments:  # the schedule's first batch is the cell's batch size
        del raw["train"]["batch_size"]
    for key, value in assignments.items():
        group, field, *option = key.split(".")
        if option:  # workload.options.NAME
            raw[group][field] = {**raw[group][field], option[0]: value}
        else:
            raw[group][field] = value
    try:
        return CellSettings.model_validate(raw)
    except ValidationError as exc:
        where = ", ".join(f"{'sweep.' * (k in config.sweep)}{k}={v!r}" for k, v in assignments.items())
        label = f"variant {variant!r} ({where})" if variant else f"the cell {where}"
        raise ConfigError(f"{config.name}: {label} is invalid: {describe(exc.errors()[0])}") from None


def select(cells: list[Cell], ids: list[str] | None = None, array_index: int | None = None) -> list[Cell]:
    """All cells, the ones named by id, or the one a Slurm array index points at."""
    if ids:
        by_id = {c.id: c for c in cells}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ConfigError(f"--cells: unknown cell id(s) {', '.join(unknown)}; `harness plan` lists the ids")
        return [by_id[i] for i in ids]
    if array_index is not None:
        if not 0 <= array_index < len(cells):
            raise ConfigError(f"array index {array_index} is outside 0..{len(cells) - 1} "
                              f"(the sweep has {len(cells)} cells)")
        return [cells[array_index]]
    return list(cells)


def check_divisible(cells: list[Cell], num_processes: int) -> None:
    """Batch size is GLOBAL: each of P processes takes B/P, so B must divide evenly."""
    for cell in cells:
        if cell.batch_size % num_processes:
            raise ConfigError(
                f"train.batch_size={cell.batch_size} (cell {cell.id}) is not divisible by the "
                f"{num_processes} processes; use batch sizes that are multiples of {num_processes} "
                f"or launch a number of processes that divides every batch size"
            )
        micro, local = cell.settings.train.micro_batch_size, cell.batch_size // num_processes
        if isinstance(micro, int) and micro < local and local % micro:
            raise ConfigError(f"train.micro_batch_size={micro} (cell {cell.id}) does not divide the "
                              f"{local} examples per process of batch {cell.batch_size} on {num_processes} "
                              f"process(es); use a divisor of it, or train.micro_batch_size=auto")


PLAN_SCHEMA_VERSION = 1


def plan_document(config: SweepConfig, cells: list[Cell], command: str) -> dict[str, Any]:
    """plan.json: the whole sweep as planned (the config, report rules included, and every cell),
    so the report can apply the rules, list cells that never ran, and say how to rerun."""
    workloads = {json.dumps(c.workload, sort_keys=True): c.workload for c in cells if c.workload is not None}
    return {"schema_version": PLAN_SCHEMA_VERSION, "sweep": config.name, "config": config.model_dump(mode="json"),
            "command": command, "workloads": list(workloads.values()),
            "cells": [{"index": c.index, "id": c.id, "swept": c.swept} for c in cells]}
