"""Were the cells a report compares measured alike? Time per image moves with the device, the
processes, torch, the CPU threads and the engine (eager, compile, cuda_graphs), and the sweet spot
is a ratio of times: cells that differ in any of these are not a fair comparison, and the first
screen says so in one line."""

from __future__ import annotations

import re

import pandas as pd

# cell column (analysis/collect.cell_row) -> how the report names it
FACTORS = {"env.device_name": "device", "num_processes": "processes", "env.torch": "torch",
           "threads": "CPU threads", "engine_mode": "engine",
           "input_mode": "input"}


def differing(cells: pd.DataFrame) -> dict[str, list]:
    """Per factor on which the done cells differ, its values (unknowns left out)."""
    done = _done(cells)
    found = {name: _values(done, column) for column, name in FACTORS.items()}
    return {name: values for name, values in found.items() if len(values) > 1}


def caveat_text(found: dict[str, list], what: str = "These cells") -> str | None:
    if not found:
        return None
    listed = "; ".join(f"{name} {' and '.join(map(str, values))}" for name, values in found.items())
    return (f"{what} were not measured alike ({listed}): time per image, and so the sweet spot, moves with each; "
            f"compare runs made under one setting (e.g. --threads N, one train.mode, "
            f"one data.input).")


def summary(cells: pd.DataFrame) -> str | None:
    """What the times were measured under, in one line: `engine eager · 2 CPU threads · 1 process`."""
    done = _done(cells)
    if done.empty:
        return None
    engines, threads, processes, torch = (_values(done, c) for c in ("engine_mode", "threads", "num_processes",
                                                                       "env.torch"))
    listed = lambda values: " and ".join(map(str, values))  # noqa: E731
    parts = [f"engine {listed(engines)}" if engines else None,
             f"{listed(threads)} CPU thread{'' if threads == [1] else 's'}" if threads else None,
             f"{listed(processes)} process{'' if processes == [1] else 'es'}" if processes else None,
             f"torch {listed(torch)}" if torch else None]
    return " · ".join(p for p in parts if p) or None


def engine_sentence(spots: dict[str, int | None]) -> str | None:
    """With variants that differ in train.mode alone: how the engine moves the sweet spot."""
    by_rest: dict[str, dict[str, int | None]] = {}
    for variant, batch in spots.items():
        mode = re.search(r"train\.mode=([A-Za-z_]+)", variant or "")
        if mode:
            rest = re.sub(r"(, )?train\.mode=[A-Za-z_]+(, )?", lambda m: ", " if m.group(1) and m.group(2) else "",
                          variant).strip(", ")
            by_rest.setdefault(rest, {})[mode.group(1)] = batch
    for rest, modes in by_rest.items():
        if len(modes) > 1:
            named = ", ".join(f"{mode} {batch if batch is not None else 'none'}"
                              for mode, batch in sorted(modes.items()))
            same = len(set(modes.values())) == 1
            where = f" ({rest})" if rest else ""
            return (f"The engine {'does not move' if same else 'moves'} the sweet spot{where}: {named}. The model "
                    f"and its steps to target are the same; only the time per step differs.")
    return None


def _done(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells["status"] == "done"] if not cells.empty else cells


def _values(done: pd.DataFrame, column: str) -> list:
    """The distinct known values of one column, sorted."""
    return sorted({_plain(v) for v in done.get(column, []) if not _missing(v)}, key=str)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value
