"""Launched as 2 gloo processes by tests/test_distributed.py: predict's short run and timing pass,
with rank 1 made slower by SLEEP_S per step (a step function wrapped here, the one thing this
script changes). Each rank writes its timed windows to OUT/rank<R>.json; the slowest rank's time must be the
time on both ranks, since every rank waits for the slowest at the next collective."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from harness.config import CellSettings, CheckSettings, DataSettings, TrainSettings
from harness.plan import Cell
from harness.prediction import runs
from harness.training import cell_run
from harness.training.cell_run import RunContext
from harness.training.data import to_device
from harness.training.images import find_mnist, load_mnist
from harness.training.preemption import StopRequest
from harness.training.progress import Progress

SLEEP_S = 0.02


def slowed(build):
    def build_engine(settings, accelerator, splits, workload, **options):
        engine = build(settings, accelerator, splits, workload, **options)
        step = engine.step
        if accelerator.process_index == 1:
            engine.step = lambda idx: (time.sleep(SLEEP_S), step(idx))[1]
        return engine
    return build_engine


if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    splits = to_device(load_mnist(find_mnist(Path(sys.argv[1]))), 5000, accelerator.device)
    settings = CellSettings(train=TrainSettings(batch_size=64, epochs=1, images_per_epoch=1280, untimed_steps=2),
                            data=DataSettings(train_eval_size=1000))
    cell = Cell(index=0, id="bs64", settings=settings, swept={})
    cell_run.build_engine = slowed(cell_run.build_engine)
    ctx = RunContext(accelerator=accelerator, splits=splits, progress=Progress(accelerator.is_main_process, True),
                     stop=StopRequest(), checks=CheckSettings(first_step=5, per_decade=5), environment={})
    short = runs.short_run(cell, ctx, 1.01)
    timing = runs.time_steps(cell, ctx)
    out = Path(sys.argv[2]) / f"rank{accelerator.process_index}.json"
    out.write_text(json.dumps({"windows": short.windows, "timing_windows": timing["window_seconds_per_step"]}))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()  # a live gloo group at exit can abort the process
    # and so, rarely, can gloo's threads met by C++ destructors at interpreter exit ("terminate
    # called without an active exception"): everything this script measures is written, so leave now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
