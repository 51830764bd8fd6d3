"""The `harness` command: argument parsing and the order of the pipeline, nothing more.

    harness run      train every cell of a sweep, then write its report (also: accelerate launch harness/run.py)
    harness predict  the sweet spot from short runs, without the grid; --verify then trains it and its neighbours
    harness plan     a sweep's cells, ids and status; trains nothing
    harness report   one self-contained HTML report from results folders
    harness status   the state of every cell under a results folder
    harness bench    the training step against the loop users write, side by side
    harness capacity the largest micro-batch that fits, every process agreeing (capacity.json)
    harness branch   the critical batch over training, by branching; proposes a batch schedule (--verify trains it)
    harness slurm submit   the cells not done yet, as one Slurm array job

run, predict, report and status (once every cell is done) end with the answer in one line, or with
--json as one JSON object on stdout. The options are defined in harness/parser.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import NamedTuple

from harness import commands, plan
from harness.config import SweepConfig
from harness.errors import EXIT_PREEMPTED, ConfigError, HarnessError, Interrupted, ResultsError, StopRequested
from harness.parser import build_parser
from harness.paths import REPO_ROOT
from harness.record import documents, files, locks, results
from harness.spec import SweepSpec
from harness.training import images


class Outcome(NamedTuple):
    """What a command ends with: its exit code, and the answer --json prints (None: no answer)."""

    code: int
    answer: dict | None = None


def resolve_config(path: str) -> Path:
    """A relative path is looked up in the working folder first, then in the repository."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    in_repo = REPO_ROOT / given
    return in_repo if in_repo.exists() else given


def slurm_submit_command(args) -> Outcome:
    from harness.cluster import slurm

    if min(args.gpus_per_task, args.nodes) < 1 or (args.max_parallel is not None and args.max_parallel < 1):
        raise ConfigError("--gpus-per-task, --nodes and --max-parallel must be >= 1")
    config, cells, sweep_dir = load_plan(args)
    documents.check_one_config(sweep_dir, config, args.force)
    processes = args.gpus_per_task * args.nodes
    awkward = [c for c in cells if c.batch_size % processes]
    if awkward:  # every such task would fail at launch: refuse now, before submitting anything
        raise ConfigError(f"--gpus-per-task {args.gpus_per_task} x --nodes {args.nodes} = {processes} processes per "
                          f"cell, but train.batch_size={awkward[0].batch_size} (cell {awkward[0].id}) is not divisible "
                          f"by {processes}; choose a process count that divides every batch size")
    pending = [c for c in cells if not results.is_done(sweep_dir / c.id)]
    if not pending:
        print(f"nothing to submit: all {len(cells)} cells of sweep {config.name} are done ({sweep_dir})")
        return Outcome(0)
    options = slurm.SlurmOptions(max_parallel=args.max_parallel, partition=args.partition,
                                 gpus_per_task=args.gpus_per_task,
                                 nodes=args.nodes, time=args.time, account=args.account)
    config_path = resolve_config(args.config).resolve()
    run_args = ["--results-dir", str(Path(args.results_dir).resolve())] + [a for o in args.set for a in ("--set", o)]
    run_args += ["--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir else []
    log_dir = sweep_dir.resolve() / "slurm"
    argv = slurm.sbatch_argv(options, [c.index for c in pending], config.name, log_dir, config_path, run_args)
    if args.dry_run:
        print(slurm.dry_run_text(argv, options, run_args, config_path))
        return Outcome(0)
    results.check_writable(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # the plan as submitted (the workload's code located, its source hashed): each task checks its cell against it
    results.write_plan(sweep_dir, plan.plan_document(config, cells, shlex.join(["harness", *sys.argv[1:]])))
    job = slurm.submit(argv)
    print(f"submitted array job {job}: {len(pending)} task(s), the cells not yet done "
          f"({len(cells) - len(pending)} of {len(cells)} already done)")
    print(f"logs: {log_dir}/{job}_<task>.out")
    return Outcome(0)


def status_command(args) -> Outcome:
    if not args.folder.is_dir():
        raise ResultsError(f"{args.folder} is not a folder; pass a results folder such as results/default")
    results.check_readable(args.folder, "RESULTS_DIR")
    records = [(p.parent, *results.record_state(p.parent)) for p in files.find(args.folder, "result.json")]
    if not records:
        raise ResultsError(f"no result.json under {args.folder}; run or submit a sweep first")
    records.sort(key=lambda found: _cell_order(*found))
    print(f"{'cell':40s}  {'status':9s}  {'epochs':>6s}  {'checkpoint':10s}  {'slurm job_task':14s}  lock holder")
    table = []  # what --json gives, a row per cell
    for cell_dir, record, problem in records:
        if record is None:
            print(f"{cell_dir.name:40s}  {'invalid':9s}  {problem}")
            table.append({"cell_id": cell_dir.name, "status": "invalid", "problem": problem})
            continue
        env = record.get("environment") or {}
        slurm_id = f"{env.get('slurm_job_id')}_{env.get('slurm_array_task_id')}" if env.get("slurm_job_id") else "-"
        epochs = (record.get("summary") or {}).get("epochs_completed", len(results.read_epoch_rows(cell_dir)))
        waiting = "yes" if any(cell_dir.glob("checkpoint-rank*.pt")) else "-"
        holder = locks.describe(cell_dir) if record.get("status") == "running" else "-"
        print(f"{record.get('cell_id', cell_dir.name):40s}  {record.get('status', '?'):9s}  {epochs:>6}  "
              f"{waiting:10s}  {slurm_id:14s}  {holder}")
        table.append({"cell_id": record.get("cell_id", cell_dir.name), "status": record.get("status"),
                      "epochs": epochs, "checkpoint": waiting == "yes", "slurm": slurm_id, "lock_holder": holder})
    failed = [record for _, record, _ in records if record and record.get("status") == "failed"]
    if failed:  # a failure is not a state to wait out: say which, and exit 1 as `harness run` did
        print(f"{len(failed)} of {len(records)} cells failed; the first: {failed[0].get('cell_id')}: "
              f"{failed[0].get('error')}")
        return Outcome(1, {"cells": table, "failed": len(failed)})
    planned = set(results.planned_ids(args.folder) or [])
    done = {record["cell_id"] for _, record, _ in records if record and record.get("status") == "done"}
    if len(done) == len(records) and planned <= done:  # every cell done: the answer as well
        from harness.analysis.answer import answer, headlines
        from harness.analysis.collect import collect

        found = collect([args.folder])
        keys = list(found.cells[["source", "sweep"]].drop_duplicates().itertuples(index=False, name=None))
        report = args.folder / "report.html"
        return Outcome(0, {"cells": table} | answer_with(args, {key: headlines(answer(found, key)) for key in keys},
                                                         report if report.exists() else None))
    return Outcome(0, {"cells": table, "done": len(done), "planned": len(planned | {r["cell_id"] for r in table})})


def _cell_order(cell_dir: Path, record: dict | None, problem: str | None) -> tuple:
    """Cells by batch size, then seed (then id); unreadable records last."""
    train = ((record or {}).get("settings") or {}).get("train") or {}
    batch, seed = train.get("batch_size"), train.get("seed")
    numbers = isinstance(batch, int) and isinstance(seed, int)
    return (not numbers, batch if numbers else 0, seed if numbers else 0, cell_dir.name)


def retime_command(args) -> Outcome:
    if args.device == "cpu":  # before torch loads: no GPU is seen
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from harness.prediction import retime  # torch and accelerate load only when timing
    from harness.training.progress import Progress

    if not args.folder.is_dir():
        raise ResultsError(f"{args.folder} is not a folder; pass a sweep's results folder such as results/default")
    if args.device == "cuda" and not _cuda_available():
        raise ConfigError("--device cuda: no CUDA device is visible here; leave --device out to time on the CPU")
    started = time.perf_counter()
    _, cells = retime.cells_to_time(args.folder)
    folders = images.data_folders({c.settings.dataset for c in cells}, args.data_dir)
    main_process = os.environ.get("RANK", "0") == "0"
    doc = retime.retime(args.folder, folders, Progress(main_process, True))
    if main_process:
        print(retime.summary_line(doc, started))
    if args.no_report or not main_process:
        return Outcome(0)
    from harness.report.page import build_report

    built = build_report([args.folder], args.folder / "report.html")
    return Outcome(0, answer_with(args, built.answers, args.folder / "report.html"))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bench_command(args) -> Outcome:
    from harness.training.bench import DEFAULT_BATCHES, LOOPS, QUICK_BATCHES, run_bench

    batches = _int_list(args.batch_sizes, "--batch-sizes") or list(QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    repeats = 2 if args.quick and args.repeats == 3 else args.repeats
    loops = [m.strip() for m in args.modes.split(",")] if args.modes else None
    if any(b < 1 or b > 55_000 for b in batches) or repeats < 1:
        raise ConfigError("--batch-sizes must lie in 1..55000 and --repeats must be >= 1")
    if loops and set(loops) - set(LOOPS):
        raise ConfigError(f"--modes: unknown loop in {args.modes!r}; choose from {', '.join(LOOPS)}")
    data_dir = images.resolve_data_dir(args.data_dir)
    folder = images.find_mnist(data_dir) if data_dir else images.download(images.CACHE_DIR)
    run_bench(folder, batches, loops, repeats, args.out, args.skip_reference_above, args.threads, args.quick)
    print(f"bench: {args.out / 'bench.json'}, {args.out / 'bench.csv'}")
    return Outcome(0)


def _int_list(text: str | None, option: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None


def load_plan(args) -> tuple[SweepConfig, list[plan.Cell], Path]:
    spec = SweepSpec.from_config(resolve_config(args.config), args.set, results_dir=args.results_dir)
    return spec.config, spec.cells, spec.sweep_dir


def plan_command(args) -> Outcome:
    config, cells, sweep_dir = load_plan(args)
    results.check_readable(sweep_dir, "--results-dir")
    print(f"sweep {config.name}: {len(cells)} cells -> {sweep_dir}")
    problems = []
    for cell in cells:
        record, problem = results.record_state(sweep_dir / cell.id)
        status = record["status"] if record else "invalid" if problem else "pending"
        problems += [problem] if problem else []
        swept = " ".join(f"{k}={v}" for k, v in cell.swept.items())
        print(f"{cell.index:4d}  {cell.id:40s}  {status:8s}  {swept}")
    for problem in problems:  # not done: `harness run` keeps the file aside and trains the cell again
        print(f"invalid: {problem}")
    return Outcome(0)


def report_command(args) -> Outcome:
    from harness.report.page import build_report

    _check_report_flags(args.target, args.tolerance)
    for folder in args.folders:
        results.check_readable(folder, "RESULTS_DIR")
    built = build_report(args.folders, args.output, args.target, args.tolerance)
    return Outcome(0, answer_with(args, built.answers, args.output))


def _check_report_flags(target: float | None, tolerance: float | None) -> None:
    """--target and --tolerance obey the bounds of a config's report section."""
    from pydantic import ValidationError

    from harness.config import ReportSettings

    flags = {"target_accuracy": ("--target", target, "0.97"), "tolerance": ("--tolerance", tolerance, "0.005")}
    try:
        ReportSettings.model_validate({k: v for k, (_, v, _) in flags.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        flag, value, example = flags[error["loc"][0]]
        raise ConfigError(f"{flag} {value}: {error['msg'][0].lower()}{error['msg'][1:]}; pass e.g. {flag} {example}") \
            from None


def answer_with(args, answers: dict[tuple[str, str], list[dict]], report: Path | None) -> dict:
    """End a command with the answer: one line per sweep and variant (none with --json); the
    answer as one object, which main prints with --json."""
    from harness.analysis.answer import line

    several = len(answers) > 1
    lines = [f"{f'{source}/{sweep}: ' if several else ''}{line(h, str(report) if report else None)}"
             for (source, sweep), found in answers.items() for h in found]
    if not args.json:
        print("\n".join(lines))
    return {"report": str(report) if report else None,
            "sweeps": [{"folder": source, "sweep": sweep, "answers": found}
                       for (source, sweep), found in answers.items()]}


def run_command(args) -> Outcome:
    # Everything the user can get wrong is checked before any process trains.
    config, all_cells, sweep_dir = load_plan(args)
    ids = [i.strip() for i in args.cells.split(",") if i.strip()] if args.cells else None
    cells = plan.select(all_cells, ids, args.array_index)
    retrain = _retrain_ids(args.retrain, cells)
    if args.array_index is not None:
        check_against_plan(sweep_dir, args.array_index, cells[0])
    else:  # a Slurm task trains what was submitted, checked above
        documents.check_one_config(sweep_dir, config, getattr(args, "force", False))
    results.check_readable(sweep_dir, "--results-dir")
    results.check_writable(sweep_dir)
    folders = images.data_folders({c.settings.dataset for c in cells}, args.data_dir)

    return train_and_report(config, cells, all_cells, sweep_dir, folders, args, retrain)


def _retrain_ids(text: str | None, cells: list[plan.Cell]) -> frozenset[str]:
    """--retrain's cell ids, each one this run trains."""
    wanted = [i.strip() for i in (text or "").split(",") if i.strip()]
    known = {c.id for c in cells}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ConfigError(f"--retrain: cell {unknown[0]} is not among the cells this run trains; list ids from "
                          f"`harness plan` (and --cells, where given)")
    return frozenset(wanted)


def check_against_plan(sweep_dir: Path, index: int, cell: plan.Cell) -> None:
    """An array task trains the cell the submitted plan has at its index: a config or workload file
    edited since then would give another cell there."""
    planned = results.planned_ids(sweep_dir)
    if planned and index < len(planned) and planned[index] != cell.id:
        raise ConfigError(f"--array-index {index}: the submitted plan ({sweep_dir / 'plan.json'}) has cell "
                          f"{planned[index]} there, this config gives {cell.id}: the config or the workload's code "
                          f"changed since; submit again (harness slurm submit), or run without --array-index")


def train_and_report(config: SweepConfig, cells: list[plan.Cell], all_cells: list[plan.Cell], sweep_dir: Path,
                     folders: dict[str, Path] | None, args, retrain: frozenset[str] = frozenset()) -> Outcome:
    from harness.training.sweep import run_sweep  # torch and accelerate load only when training

    outcome = run_sweep(config, cells, sweep_dir, folders, quiet=args.quiet, all_cells=all_cells,
                        fail_fast=getattr(args, "fail_fast", False), retrain=retrain)
    # the pipeline's order lives here: train, then report (one process writes it); a preempted
    # run leaves at once, its grace period is for the checkpoint
    recorded = sweep_dir.is_dir() and next(iter(files.find(sweep_dir, "result.json")), None) is not None
    if outcome.main_process and not args.no_report and outcome.exit_code != EXIT_PREEMPTED and recorded:
        from harness.report.page import build_report

        built = build_report([sweep_dir], sweep_dir / "report.html")
        return Outcome(outcome.exit_code, answer_with(args, built.answers, sweep_dir / "report.html"))
    return Outcome(outcome.exit_code)


COMMANDS = {"run": run_command, "predict": lambda a: Outcome(*commands.predict_command(a, load_plan, train_and_report)),
            "branch": lambda a: Outcome(*commands.branch_command(a, load_plan, train_and_report)),
            "plan": plan_command, "report": report_command,
            "bench": bench_command, "retime": retime_command, "slurm": slurm_submit_command, "status": status_command,
            "capacity": lambda a: Outcome(*import_module("harness.training.capacity_job").capacity_command(
                a, *load_plan(a)))}


def main(argv: list[str] | None = None, prog: str = "harness") -> int:
    args = build_parser(prog).parse_args(argv)
    if getattr(args, "threads", None) and isinstance(getattr(args, "set", None), list):
        args.set.append(f"train.threads={args.threads}")  # a setting like any other: Slurm tasks get it too
    answers_only = getattr(args, "json", False)
    first = os.environ.get("RANK", "0") == "0"  # one line per launch, not one per process
    try:
        with _answer_alone_on_stdout() if answers_only else contextlib.nullcontext():
            code, answer = COMMANDS[args.command](args)
        if answers_only and answer is not None:
            print(json.dumps(answer))
        return code
    except HarnessError as exc:
        if getattr(args, "debug", False) and getattr(exc, "details", None):
            print(exc.details, file=sys.stderr, end="")
        stopped = isinstance(exc, StopRequested)
        one_line = str(exc).replace("\n", " ")  # a value the user typed may hold a newline
        return _said(f"harness: {'stopped' if stopped else 'error'}: {one_line}", EXIT_PREEMPTED if stopped else 2,
                     answers_only and first, first)
    except Interrupted as exc:  # a second SIGTERM ended a hung step (training/preemption.py)
        return _said(f"harness: stopped: {exc}", 1, answers_only and first, first)


def _said(text: str, code: int, as_json: bool, first: bool) -> int:
    """An error's one line on stderr; with --json, also as the object on stdout."""
    if first:
        print(text, file=sys.stderr)
    if as_json:
        print(json.dumps({"error": text.split(": ", 2)[-1], "exit_code": code}))
    return code


@contextlib.contextmanager
def _answer_alone_on_stdout():
    """With --json, stdout carries the answer alone: what the command prints, and what the user's
    code or a C library writes to file descriptor 1, goes to stderr until the answer is printed."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
