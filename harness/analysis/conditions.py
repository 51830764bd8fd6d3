"""Were the cells a report compares measured alike? Time per image moves with the device, the
processes, torch, the CPU threads and the engine (eager, compile, cuda_graphs), and the sweet spot
is a ratio of times: cells that differ in any of these are not a fair comparison, and the first
screen says so in one line."""

from __future__ import annotations

import re

import pandas as pd

# cell column (analysis/collect.cell_row) -> how the report names it
FACTORS = {"env.device_name": "device", "num_processes": "processes", "env.torch": "torch",
           "threads": "CPU threads", "engine_mode": "engine"}


def differing(cells: pd.DataFrame) -> dict[str, list]:
    """Per factor on which the done cells differ, its values (unknowns left out)."""
    done = cells[cells["status"] == "done"] if not cells.empty else cells
    out = {}
    for column, name in FACTORS.items():
        if column in done:
            values = sorted({_plain(v) for v in done[column] if not _missing(v)}, key=str)
            if len(values) > 1:
                out[name] = values
    return out


def caveat_text(found: dict[str, list], what: str = "These cells") -> str | None:
    if not found:
        return None
    listed = "; ".join(f"{name} {' and '.join(map(str, values))}" for name, values in found.items())
    return (f"{what} were not measured alike ({listed}): time per image, and so the sweet spot, moves with each; "
            f"compare runs made under one setting (e.g. --threads N, one train.mode).")


def summary(cells: pd.DataFrame) -> str | None:
    """What the times were measured under, in one line: `engine eager · 2 CPU threads · 1 process`."""
    done = cells[cells["status"] == "done"] if not cells.empty else cells
    if done.empty:
        return None
    parts = []
    for column, name in (("engine_mode", "engine"), ("threads", "CPU thread"), ("num_processes", "process")):
        values = sorted({_plain(v) for v in done.get(column, []) if not _missing(v)}, key=str)
        if values:
            shown = " and ".join(map(str, values))
            plural = "es" if name == "process" else "s"
            parts.append(f"engine {shown}" if name == "engine" else
                         f"{shown} {name}{plural if values != [1] else ''}")
    torch = sorted({str(v) for v in done.get("env.torch", []) if not _missing(v)})
    if torch:
        parts.append(f"torch {' and '.join(torch)}")
    return " · ".join(parts) or None


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
            named = ", ".join(f"{mode} {batch if batch is not None else 'none'}" for mode, batch in sorted(modes.items()))
            same = len(set(modes.values())) == 1
            where = f" ({rest})" if rest else ""
            return (f"The engine {'does not move' if same else 'moves'} the sweet spot{where}: {named}. The model "
                    f"and its steps to target are the same; only the time per step differs.")
    return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value
