"""Benchmark, not a test: what the diagnostics cost, measured side by side in one process.

    python tests/benchmarks/diagnostics_overhead.py [--batches 1 64] [--steps 4000] [--repeats 5] [--out FILE]

1. Per-step diagnostics (train.step_diagnostics): the engine's step with and without them, on the
   same model, images and order; repeats alternate; the median time per image of each and their
   ratio. This is what decides whether they are on by default (only under 5% at batch size 1).
2. Per-epoch diagnostics (probe, Adam state, B_simple): their seconds against one epoch of the
   motivating case (10,000 steps at batch size 1, at the time per image measured in 1). They run
   outside the timed window, so they cost wall time, never time per image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from harness.config import CellSettings, ModelSettings, TrainSettings
from harness.training import data, images, measure, workloads
from harness.training.bench import engine_loop
from harness.training.data import IndexStream
from harness.training.diagnostics import diagnose
from harness.training.engine import build_engine

MOTIVATING_EPOCH_STEPS = 10_000


def settings_for(batch: int, step_diagnostics: bool) -> CellSettings:
    return CellSettings(model=ModelSettings(init="normal"),
                        train=TrainSettings(batch_size=batch, step_diagnostics=step_diagnostics))


def time_per_image(accelerator, splits, batch: int, steps: int, step_diagnostics: bool) -> float:
    """`harness bench`'s own timed loop over the harness step (warm-up outside the clock)."""
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(steps * batch)
    run, _ = engine_loop(accelerator, splits, order, settings_for(batch, step_diagnostics), record=False)
    return run.seconds / run.timed_images


def epoch_diagnostics_seconds(accelerator, splits, batch: int) -> float:
    """One end-of-epoch diagnosis of a model that has taken a few steps (so Adam has state)."""
    settings = settings_for(batch, True)
    engine = build_engine(settings, accelerator, splits, workloads.builtin(settings))
    order = IndexStream(len(splits.train_y), "shuffle", seed=0).next(20 * batch).view(20, batch).to(accelerator.device)
    for idx in order:
        engine.step(idx)
    with measure.SyncedTimer(accelerator.device) as clock:
        diagnose(engine, splits)
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    folder = images.resolve_data_dir(args.data_dir)
    folder = images.find_mnist(folder) if folder else images.download(images.CACHE_DIR)
    splits = data.to_device(images.load_mnist(folder), 5000, accelerator.device)
    env = measure.environment(accelerator.device, 1, str(accelerator.distributed_type), "no")
    rows = []
    print(f"device: {env['device_name']}  (step diagnostics on / off, median of {args.repeats} alternating repeats)")
    for batch in args.batches:
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for on in (False, True):
                times[on].append(time_per_image(accelerator, splits, batch, args.steps, on))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        diagnosis_s = epoch_diagnostics_seconds(accelerator, splits, batch)
        epoch_s = MOTIVATING_EPOCH_STEPS * batch * off
        row = {"device": env["device_name"], "batch_size": batch, "steps": args.steps, "repeats": args.repeats,
               "time_per_image_off_s": off, "time_per_image_on_s": on, "step_diagnostics_overhead": on / off - 1,
               "epoch_diagnostics_s": diagnosis_s, "epoch_of_10000_steps_s": epoch_s,
               "epoch_diagnostics_overhead": diagnosis_s / epoch_s}
        rows.append(row)
        print(f"bs{batch}: {off * 1e6:.1f} us/img off, {on * 1e6:.1f} us/img on -> step diagnostics "
              f"+{row['step_diagnostics_overhead']:.1%}; epoch diagnostics {diagnosis_s:.3f} s = "
              f"{row['epoch_diagnostics_overhead']:.1%} of a {MOTIVATING_EPOCH_STEPS}-step epoch", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"environment": env, "date_utc": measure.utc_now(), "rows": rows},
                                       indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
