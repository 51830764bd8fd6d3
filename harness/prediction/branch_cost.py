"""What `harness branch` cost against the grid it would replace: examples and seconds (branch.json's cost)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harness.plan import Cell
from harness.record.results import STAMP_FORMAT


def of_branching(by_seed: dict[int, dict[str, Any]], seeds: tuple[int, ...], cells: list[Cell], n_train: int,
                 wall_seconds: float) -> dict[str, Any]:
    """What branching trained (each base run to its horizon, every branch), against the grid's cells
    of the same seeds (in examples; add_grid_cost adds seconds once the grid has run)."""
    points = [p for run in by_seed.values() for p in run["points"]]
    branch_examples = sum(len(p["branches"]) * p["branch_examples"] for p in points)
    base_examples = sum(run["horizon_examples"] for run in by_seed.values())
    grid = [c for c in cells if c.settings.train.seed in seeds] or cells
    grid_examples = sum(c.settings.sized(n_train).batch_plan.examples_before(c.settings.sized(n_train).total_steps)
                        for c in grid)
    base_seconds = sum(run["seconds"] for run in by_seed.values())
    branch_seconds = sum(b["seconds"] for p in points for b in p["branches"])
    checks = sum(run["check_seconds"] for run in by_seed.values()) + \
        sum(b["check_seconds"] for p in points for b in p["branches"])
    return {"examples": base_examples + branch_examples, "base_examples": base_examples,
            "branch_examples": branch_examples, "grid_examples": grid_examples, "grid_cells": len(grid),
            "share_of_grid_examples": (base_examples + branch_examples) / grid_examples,
            "base_seconds": base_seconds, "branch_seconds": branch_seconds,
            "train_seconds": base_seconds + branch_seconds, "check_seconds": checks, "wall_seconds": wall_seconds}


def add_grid_cost(doc: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Once the grid has run (--verify): its fixed cells' training seconds beside branching's."""
    grid = [r for r in records if r.get("status") == "done" and not r["settings"]["train"].get("batch_schedule")
            and r["settings"]["train"]["seed"] in doc["plan"]["seeds"]]
    seconds = sum((r["summary"].get("train_seconds") or 0) + (r["summary"].get("warmup_seconds") or 0) for r in grid)
    wall = sum(_record_wall(r) for r in grid)
    doc["cost"] |= {"grid_train_seconds": seconds, "grid_cells_done": len(grid),
                    "share_of_grid_seconds": doc["cost"]["train_seconds"] / seconds if seconds else None,
                    "grid_wall_seconds": wall,
                    "share_of_grid_wall": doc["cost"]["wall_seconds"] / wall if wall else None}
    return doc


def _record_wall(record: dict[str, Any]) -> float:
    """A cell's wall seconds, start to finish as its record stamps them (to the second)."""
    stamps = [record.get(k) for k in ("started_utc", "finished_utc")]
    if not all(stamps):
        return 0.0
    started, finished = (datetime.strptime(s, STAMP_FORMAT) for s in stamps)
    return max(0.0, (finished - started).total_seconds())
