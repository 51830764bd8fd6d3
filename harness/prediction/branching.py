"""`harness branch`: the critical batch over training, measured by branching (Merrill et al. 2025).

Per seed, one base run at a small batch (the grid's cell, the same loop: training/cell_run.py). At
log-spaced steps of it, the weights and the optimizer state are copied into branches at several
batch sizes; each trains the same number of examples (the same examples: one stream seed per point)
at the rate the base had there, moved by the config's scaling rule, and the held-out loss it gains
gives B_crit at that point (analysis/critical.py). B_simple is measured on the same weights. The
proposal is the batch schedule that follows B_crit(t); `--verify` trains it beside the grid.
Nothing here writes a cell's result; branch.json holds every number.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import checks
from harness.analysis import critical
from harness.config import MAX_SEED, SweepConfig
from harness.errors import ConfigError, StopRequested
from harness.plan import Cell
from harness.prediction import branch_cost
from harness.record import results
from harness.training import batches, diagnostics
from harness.training.cell_run import CellRun, Course, RunContext
from harness.training.evaluation import validate

BRANCH_FILE = "branch.json"
FACTORS = (0.25, 0.5, 1, 2, 4)  # branch batch sizes, as multiples of the centre (Plan)
POINTS = 6
BRANCH_STEPS = 12  # steps of the LARGEST branch; every branch trains its examples
CHECKS = 8  # held-out loss checks along each branch
BRANCH_VAL = 1000  # on this many validation examples (the same ones for every branch at a point)
CANDIDATES = 24  # base-run steps copied (log-spaced over its budget); the points are the nearest ones
HELD = {"schedule": "constant", "lr_warmup_steps": 0, "lr_warmup_fraction": 0.0, "lr_final_fraction": 0.0}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one `harness branch` measures. Branches go around a centre batch that follows B_crit:
    the base batch at the first point, then the largest power-of-2 multiple of it within the last
    point's B_crit (never lower; four times higher where B_crit lay above every branch)."""

    base_batch: int
    factors: tuple[float, ...]  # branch batch sizes, as multiples of the centre
    points: int  # branch points per base run, log-spaced up to its horizon
    branch_steps: int  # the largest branch's steps; every branch at a point trains as many examples
    seeds: tuple[int, ...]
    max_batch: int  # no branch above the grid's largest batch
    processes: int = 1

    def around(self, centre: int) -> tuple[int, ...]:
        sizes = {int(centre * f) for f in self.factors if centre * f == int(centre * f)}
        return tuple(sorted(b for b in sizes if self.processes <= b <= self.max_batch and b % self.processes == 0))

    def examples(self, batches: tuple[int, ...]) -> int:
        return self.branch_steps * max(batches)

    def next_centre(self, centre: int, b_crit: float | None, bound: str | None) -> int:
        highest = max(b for b in (self.base_batch * 2**k for k in range(40)) if b * max(self.factors) <= self.max_batch
                      or b == self.base_batch)
        if b_crit is not None:
            wanted = max([b for b in (self.base_batch * 2**k for k in range(40)) if b <= b_crit] or [centre])
        else:
            wanted = centre * 4 if bound and bound.startswith("above") else centre
        return min(max(wanted, centre), max(highest, centre))


def base_batch_of(cells: list[Cell], given: int | None) -> int:
    """The base run's batch: `given` (--base-batch), else the grid's second smallest."""
    grid = sorted({c.batch_size for c in cells})
    return given or (grid[1] if len(grid) > 1 else grid[0])


def make_plan(cells: list[Cell], points: int = POINTS, factors=FACTORS, branch_steps: int = BRANCH_STEPS,
              base_batch: int | None = None, processes: int = 1) -> Plan:
    grid = sorted({c.batch_size for c in cells})
    base = base_batch_of(cells, base_batch)
    seeds = tuple(sorted({c.settings.train.seed for c in cells}))
    spec = Plan(base_batch=base, factors=tuple(factors), points=points, branch_steps=branch_steps,
                seeds=seeds, max_batch=max(grid[-1], base), processes=processes)
    if base not in spec.around(base) or len(spec.around(base)) < 3:
        raise ConfigError(f"harness branch: base batch {base} with --factors gives {list(spec.around(base))}; need "
                          f"the base and at least 3 batch sizes up to {spec.max_batch}, each divisible by the "
                          f"{processes} process(es)")
    return spec


def log_points(horizon: int, count: int, first: float | None = None) -> tuple[int, ...]:
    """`count` log-spaced base steps from `first` (default horizon / 64, at least 10) to the horizon."""
    start = first or max(10, horizon / 64)
    return tuple(sorted({int(s) for s in np.geomspace(start, max(horizon, start + 1), count).round()}))


def with_settings(cell: Cell, **train: Any) -> Cell:
    """The cell's settings with train fields changed (a branch, a base run at another seed)."""
    settings = cell.settings.model_copy(update={"train": cell.settings.train.model_copy(update=train)})
    return dataclasses.replace(cell, id=f"{cell.id}-branch", settings=settings)


def base_run(base: Cell, ctx: RunContext, spec: Plan, target: float, progress) -> dict[str, Any]:
    """One pass of the base run, on the grid's check schedule, to its first check at the target (its
    horizon; else to its end), copying its weights and optimizer state at log-spaced candidate steps
    (held in memory); then branches from the candidates nearest `spec.points` log-spaced points up
    to the horizon. Its record: the horizon, its seconds, and one entry per point."""
    settings = base.settings.sized(ctx.splits.n_train)
    metric = settings.workload.quality
    candidates = set(log_points(settings.total_steps, CANDIDATES, first=10))
    snapshots: dict[int, tuple] = {}

    def at_end(run: CellRun) -> bool:
        step, engine = run.state.global_step, run.engine
        if step in candidates:
            snapshots[step] = (copy.deepcopy(engine.eval_model.state_dict()),
                               copy.deepcopy(engine.optimizer.state_dict()), engine.learning_rate(),
                               run.plan.examples_before(step))
        last = run.state.evals[-1] if run.state.evals else None
        return last is not None and last["step"] == step and metric.reached(last["val_accuracy"], target)

    ends = tuple(sorted(set(checks.for_cell(settings, ctx.checks)) | candidates))
    run = CellRun(base, ctx, Course(ends=ends, warmup_steps=settings.train.untimed_steps,
                                    cap_steps=settings.total_steps, records=False, done=at_end))
    status, _ = run.run()
    if status == "preempted":
        raise StopRequested(f"{ctx.stop.signal_name} received during the base run; branch keeps nothing: run it again")
    horizon = run.state.global_step
    chosen = sorted({min(snapshots, key=lambda s: abs(np.log(s / p))) for p in log_points(horizon, spec.points)})
    found, centre, held_out = [], spec.base_batch, branch_context(ctx)
    for index, step in enumerate(chosen):
        found.append(branch_point(run, held_out, spec, index, spec.around(centre), step, snapshots.pop(step)))
        gc.collect()  # the point's branches (a full collection costs ~0.1 s of a large heap: once per point)
        progress.message(_point_line(found[-1]))
        centre = spec.next_centre(centre, found[-1]["b_crit"], found[-1]["b_crit_bound"])
    return {"reached_target": run.stopped_by_rule, "horizon_step": horizon,
            "horizon_examples": run.plan.examples_before(horizon), "snapshots_taken": len(snapshots) + len(found),
            "seconds": sum(w.seconds + w.warmup_seconds for w in run.windows),
            "check_seconds": sum(e["check_seconds"] for e in run.state.evals), "points": found}


def branch_context(ctx: RunContext) -> RunContext:
    """Branches are checked on the first BRANCH_VAL validation examples (all of them, every check):
    each point compares its branches on the same examples, so fewer of them cost less and stay fair."""
    splits = ctx.splits
    part = slice(0, min(BRANCH_VAL, splits.n_val))
    fewer = dataclasses.replace(splits, val_x=batches.take(splits.val_x, part), val_y=batches.take(splits.val_y, part))
    return dataclasses.replace(ctx, splits=fewer, checks=ctx.checks.model_copy(update={"budget": None}))


def branch_point(run: CellRun, ctx: RunContext, spec: Plan, index: int, batches: tuple[int, ...], step: int,
                 snapshot: tuple) -> dict[str, Any]:
    """Every branch from the base run's weights and optimizer state at `step` (its snapshot, loaded
    into the finished base run's model to measure the held-out loss and B_simple there)."""
    weights, state, rate, examples = snapshot
    engine, splits = run.engine, ctx.splits
    engine.eval_model.load_state_dict(weights)
    before = validate(engine.eval_model, splits, ctx.accelerator, engine.workload)[1] / splits.n_val
    noise = diagnostics.noise_scale(engine.eval_model, *splits.train_prefix(diagnostics.NOISE_IMAGES),
                                    engine.workload.summed_loss)["noise_scale"]
    optim = run.settings.optim
    seed = (run.settings.train.seed * 1009 + index + 1) % MAX_SEED
    branches = []
    for batch in batches:
        lr = rate * optim.lr_for(batch) / optim.lr_for(spec.base_batch)
        branches.append(one_branch(run.cell, ctx, batch, spec.examples(batches) // batch, weights, state, lr,
                                   seed) | {"learning_rate": lr})
    for b in branches:
        b["improvement"] = [[seen, before - loss] for seen, loss in b.pop("val_losses")]
    fit = critical.fit_point({b["batch_size"]: b["improvement"] for b in branches})
    return {"step": step, "examples": examples, "val_loss": before, "learning_rate": rate, "b_simple": noise,
            "branches": branches, "branch_examples": spec.examples(batches),
            "b_crit": fit.b_crit, "b_crit_bound": fit.bound, "fit_low": fit.low, "fit_high": fit.high,
            "target_improvement": fit.target, "examples_needed": fit.examples_needed,
            "e_over_e_min": fit.e_over_e_min, "s_over_s_min": fit.s_over_s_min}


def one_branch(cell: Cell, ctx: RunContext, batch: int, steps: int, weights: dict, state: dict, lr: float,
               seed: int) -> dict[str, Any]:
    """One branch: `steps` steps at `batch` from the given weights and optimizer state, the rate held."""
    branch = with_settings(cell, batch_size=batch, batch_schedule=None, seed=seed)
    branch = dataclasses.replace(branch, settings=branch.settings.model_copy(
        update={"optim": branch.settings.optim.model_copy(update=HELD)}))
    warm = min(branch.settings.train.untimed_steps, steps // 4)
    ends = tuple(sorted({max(1, round(steps * (i + 1) / CHECKS)) for i in range(CHECKS)}))
    run = CellRun(branch, ctx, Course(ends=ends, warmup_steps=warm, cap_steps=steps, records=False))
    run.engine.eval_model.load_state_dict(weights)
    run.engine.optimizer.load_state_dict(copy.deepcopy(state))
    for group in run.engine.optimizer.param_groups:
        group["lr"] = lr
    status, _ = run.run()
    if status == "preempted":
        raise StopRequested(f"{ctx.stop.signal_name} received during a branch; branch keeps nothing: run it again")
    timed = sum(w.steps for w in run.windows)
    seconds = sum(w.seconds for w in run.windows)
    losses = [[e["images_seen"], e["val_loss"]] for e in run.state.evals]
    out = {"batch_size": batch, "steps": steps, "val_losses": losses,
           "seconds": seconds + sum(w.warmup_seconds for w in run.windows),
           "check_seconds": sum(e["check_seconds"] for e in run.state.evals),
           "seconds_per_example": seconds / (timed * batch) if timed and seconds > 0 else None}
    del run
    if ctx.accelerator.device.type == "cuda":  # a GPU's memory is scarce: free each branch's at once
        gc.collect()
    return out


def _point_line(point: dict[str, Any]) -> str:
    crit = f"{point['b_crit']:.0f}" if point["b_crit"] is not None else point["b_crit_bound"]
    simple = f"{point['b_simple']:.0f}" if point["b_simple"] is not None else "unknown"
    return (f"branch at step {point['step']:,} ({point['examples']:,} examples): B_crit {crit}, B_simple {simple} "
            f"(branches at {', '.join(str(b['batch_size']) for b in point['branches'])}, "
            f"{point['branch_examples']:,} examples each)")


def summarize(spec: Plan, by_seed: dict[int, dict[str, Any]], threshold: float) -> dict[str, Any]:
    """B_crit(t) over seeds (point i of every seed: each seed's points lie up to its own horizon),
    the seconds per example of each batch, and the proposed schedule."""
    table = []
    for i in range(max(len(run["points"]) for run in by_seed.values())):
        points = [run["points"][i] for run in by_seed.values() if i < len(run["points"])]
        # a seed whose fit gave a bound counts at the bound ('above 512' as 512): left out, the
        # seeds that saw the curve alone would pull B_crit down where the others saw it beyond the branches
        crit = critical.across_seeds([p["b_crit"] or _bound([p["b_crit_bound"] or ""]) for p in points])
        crit["fitted"] = sum(p["b_crit"] is not None for p in points)
        simple = [p["b_simple"] for p in points if p["b_simple"] is not None]
        one = points[0] if len(points) == 1 else None
        table.append({"step": int(np.median([p["step"] for p in points])),
                      "examples": int(np.median([p["examples"] for p in points])), **crit,
                      "low": crit["low"] if one is None else one["fit_low"],
                      "high": crit["high"] if one is None else one["fit_high"],
                      "interval": "t over seeds (log)" if one is None else "the fit's (one seed, delta method)",
                      "bounds": sorted({p["b_crit_bound"] for p in points if p["b_crit_bound"]}),
                      "b_simple": float(np.median(simple)) if simple else None})
    per_example: dict[int, list[float]] = {}
    for run in by_seed.values():
        for b in (b for point in run["points"] for b in point["branches"] if b["seconds_per_example"] is not None):
            per_example.setdefault(b["batch_size"], []).append(b["seconds_per_example"])
    seconds = {b: float(np.median(v)) for b, v in per_example.items()}
    proposal = critical.propose([(row["examples"], row["b_crit"] or _bound(row["bounds"])) for row in table],
                                spec.base_batch, sorted(seconds), seconds, threshold)
    return {"b_crit": table, "seconds_per_example": {str(b): s for b, s in sorted(seconds.items())},
            "proposal": proposal, "threshold": threshold}


def _bound(bounds: list[str]) -> float | None:
    """Where no seed gave a number, the proposal reads a bound as its value: 'above 512' as 512."""
    values = [float(b.split()[1]) for b in bounds if len(b.split()) == 2 and b.split()[1].isdigit()]
    return min(values) if values else None


def branch_sweep(config: SweepConfig, cells: list[Cell], sweep_dir: Path, folders: dict[str, Path] | None,
                 progress, points: int = POINTS, factors=FACTORS, branch_steps: int = BRANCH_STEPS,
                 base_batch: int | None = None, threshold: float = 0.05) -> dict[str, Any]:
    """Base runs and branches for every seed of the grid; writes sweep_dir/branch.json (main process)."""
    from harness.training.launch import load_data, make_accelerator
    from harness.training.preemption import StopRequest

    began = time.perf_counter()
    refuse(cells)
    wanted = base_batch_of(cells, base_batch)
    first = min(cells, key=lambda c: (abs(c.batch_size - wanted), c.settings.train.seed))
    accelerator = make_accelerator(config, [first], sweep_dir)
    device_data, environment = load_data(accelerator, folders, [first])
    splits = device_data.for_cell(first)
    spec = make_plan(cells, points, factors, branch_steps, wanted, accelerator.num_processes)
    ctx = RunContext(accelerator=accelerator, splits=splits, progress=progress, stop=StopRequest().install(),
                     checks=config.checks, environment=environment)
    target = config.report.target_accuracy
    by_seed = {}
    for seed in spec.seeds:
        progress.message(f"base run at batch {spec.base_batch}, seed {seed}, to {target}: then {spec.points} "
                         f"branch points, {len(spec.factors)} batch sizes around B_crit each")
        base = with_settings(first, batch_size=spec.base_batch, batch_schedule=None, seed=seed)
        by_seed[seed] = base_run(base, ctx, spec, target, progress)
    doc = {"kind": "branch", "config": config.model_dump(mode="json"), "plan": dataclasses.asdict(spec),
           "runs": {str(seed): run for seed, run in by_seed.items()}, **summarize(spec, by_seed, threshold),
           "cost": branch_cost.of_branching(by_seed, spec.seeds, cells, splits.n_train, time.perf_counter() - began),
           "environment": environment, "base_cell": first.id, "target": target}
    if accelerator.is_main_process:
        write(sweep_dir, doc)
    accelerator.wait_for_everyone()
    return doc


def refuse(cells: list[Cell]) -> None:
    """What branching cannot measure, before anything trains."""
    for cell in cells:
        if cell.settings.train.batch_schedule is not None:
            raise ConfigError(f"harness branch measures a grid of fixed batch sizes; {cell.id} has train.batch_schedule"
                              f": drop it (branch proposes one)")
        if cell.settings.workload.optimizer:
            raise ConfigError("harness branch holds each branch's rate at the base run's; a workload.optimizer may "
                              "bring its own scheduler, which it cannot hold: use optim: settings to branch")


def ramp_cells(config: SweepConfig, cells: list[Cell], doc: dict[str, Any]) -> list[Cell]:
    """The proposed schedule as one cell per seed (the base batch's grid cell, ramped), ids as the plan's."""
    from harness import plan

    proposal = doc["proposal"]
    if len(proposal) < 2:
        return []
    out, base = [], doc["plan"]["base_batch"]
    nearest = min({c.batch_size for c in cells}, key=lambda b: abs(b - base))
    for cell in (c for c in cells if c.batch_size == nearest):
        train = cell.settings.train.model_copy(update={"batch_schedule": [tuple(p) for p in proposal],
                                                       "batch_size": base, "batch_schedule_unit": "examples"})
        settings = type(cell.settings).model_validate(cell.settings.model_copy(update={"train": train}).model_dump())
        cid = plan.cell_id(settings, list(config.sweep), "ramp", cell.workload)
        out.append(dataclasses.replace(cell, id=cid, settings=settings, index=len(cells) + len(out),
                                       swept={**cell.swept, "variant": "ramp"}))
    return out


def headline(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """What `--json` prints: B_crit(t), the proposal and the cost."""
    return {"base_batch": doc["plan"]["base_batch"], "seeds": len(doc["plan"]["seeds"]),
            "b_crit": [{k: row[k] for k in ("step", "examples", "b_crit", "low", "high", "bounds", "b_simple")}
                       for row in doc["b_crit"]],
            "proposal": doc["proposal"], "threshold": doc["threshold"],
            "share_of_grid_examples": doc["cost"]["share_of_grid_examples"], "branch_json": str(path)}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(doc: dict[str, Any]) -> str:
    """B_crit(t) as a text table, then the proposal and the cost."""
    seeds = len(doc["plan"]["seeds"])
    lines = [f"{'step':>8} {'examples':>10} {'B_crit':>8} {'95% interval':>17} {'B_simple':>9}  ({seeds} seed(s))"]
    for row in doc["b_crit"]:
        interval = f"{_number(row['low'])}-{_number(row['high'])}" if row["low"] is not None else "-"
        crit = _number(row["b_crit"]) + (f" ({', '.join(row['bounds'])})" if row["bounds"] else "")
        lines.append(f"{row['step']:>8,} {row['examples']:>10,} {crit:>8} {interval:>17} {_number(row['b_simple']):>9}")
    cost = doc["cost"]
    lines.append(f"proposed train.batch_schedule (examples): {doc['proposal']}")
    lines.append(f"cost: {cost['examples']:,} examples, {cost['share_of_grid_examples']:.0%} of the grid's "
                 f"{cost['grid_examples']:,} ({cost['grid_cells']} cells); {cost['train_seconds']:.0f} s training")
    return "\n".join(lines)


def line(answer: dict[str, Any]) -> str:
    rows = [r for r in answer["b_crit"] if r["b_crit"] is not None]
    rise = (f"B_crit {_number(rows[0]['b_crit'])} at {rows[0]['examples']:,} examples, {_number(rows[-1]['b_crit'])} "
            f"at {rows[-1]['examples']:,}" if rows else "no B_crit could be fitted")
    switch = " -> ".join(f"{b} from {e:,}" if e else str(b) for e, b in answer["proposal"])
    return f"branch: {rise}; proposed schedule {switch} examples | {answer['branch_json']}"


def record_grid_cost(sweep_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """After --verify (the command's or harness.branch's): branch.json gains the grid's cost."""
    records = [results.read_result(p.parent) for p in sorted(sweep_dir.glob("*/result.json"))]
    write(sweep_dir, branch_cost.add_grid_cost(doc, [r for r in records if r]))
    return doc


def write(sweep_dir: Path, doc: dict[str, Any]) -> Path:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    results.write_document(sweep_dir / BRANCH_FILE, doc)
    return sweep_dir / BRANCH_FILE
