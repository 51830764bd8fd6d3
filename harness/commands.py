"""The commands that train ahead of a grid: `harness predict` (the sweet spot from short runs) and
`harness branch` (the critical batch over training, and the schedule that follows it); each
`--verify` then trains what it proposes through the grid's own path (cli.train_and_report, which
the command passes in with cli.load_plan)."""

from __future__ import annotations

import os

from harness.errors import ConfigError
from harness.record import documents, results
from harness.training import images


def predict_command(args, load_plan, train_and_report) -> tuple[int, dict | None]:
    from harness.prediction import output, runs  # torch and accelerate load only when predicting
    from harness.training.progress import Progress

    config, cells, sweep_dir = load_plan(args)
    runs.check_grid(config, cells)
    documents.check_one_config(sweep_dir, config, False, "or `harness run --force` with this config first to replace "
                               "its plan.json (predict's --force is for its doubts)")
    results.check_writable(sweep_dir)
    folders = images.data_folders({c.settings.dataset for c in cells}, args.data_dir)
    main_process = os.environ.get("RANK", "0") == "0"
    doc = output.reusable(config, sweep_dir, args.force) if args.verify else None
    if doc is None:
        doc = runs.predict_sweep(config, cells, sweep_dir, folders, Progress(main_process, True), args.force)
    answer = output.headline(doc, sweep_dir / "predict.json") if main_process else None
    if main_process:
        print(output.format_prediction(doc))
        if not args.json:
            print(output.line(answer))
    if not args.verify:
        return 0, answer
    chosen = {int(b): lr for b, lr in doc["inputs"]["chosen_rates"].items()}
    batches = [doc["sweet_spot"]["batch_size"], *doc["sweet_spot"]["neighbours"]]
    verified = train_and_report(config, runs.cells_at(cells, batches, chosen), cells, sweep_dir, folders, args)
    return verified.code, verified.answer or answer


def branch_command(args, load_plan, train_and_report) -> tuple[int, dict | None]:
    from harness.prediction import branching
    from harness.training.progress import Progress

    config, cells, sweep_dir = load_plan(args)
    documents.check_one_config(sweep_dir, config, False, "or `harness run --force` with this config first")
    results.check_writable(sweep_dir)
    folders = images.data_folders({c.settings.dataset for c in cells}, args.data_dir)
    main_process = os.environ.get("RANK", "0") == "0"
    if not -1 <= args.threshold < 1:
        raise ConfigError(f"--threshold {args.threshold}: a share of time saved in [-1, 1), e.g. 0.05")
    factors = tuple(float(f) for f in args.factors.split(",")) if args.factors else branching.FACTORS
    doc = branching.branch_sweep(config, cells, sweep_dir, folders, Progress(main_process, args.quiet), args.points,
                                 factors, args.branch_steps, args.base_batch, args.threshold)
    answer = branching.headline(doc, sweep_dir / branching.BRANCH_FILE)
    if main_process:
        print(branching.table(doc))
        if not args.json:
            print(branching.line(answer))
    ramps = branching.ramp_cells(config, cells, doc) if args.verify else []
    if not ramps:
        return 0, answer
    verified = train_and_report(config, cells + ramps, cells + ramps, sweep_dir, folders, args)
    if main_process:  # the grid's cost is known now
        branching.record_grid_cost(sweep_dir, doc)
    return verified.code, verified.answer or answer
