"""Where an eager step's time goes on a GPU: the harness's own step (engine.build_engine), 200 steps
at one batch size, host ops ranked by self CPU time. Run by run_on_device.sh; prints a table."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.profiler import ProfilerActivity, profile

from harness.training import data, images, workloads
from harness.training.bench import settings_for
from harness.training.engine import build_engine


def main(batch: int = 16, steps: int = 200) -> None:
    accelerator = Accelerator()
    splits = data.to_device(images.load_mnist(images.find_mnist(Path(os.environ["HARNESS_DATA_DIR"]))), 5000, accelerator.device)
    settings = settings_for(batch, "eager")
    engine = build_engine(settings, accelerator, splits, workloads.builtin(settings))
    idx = torch.randint(0, len(splits.train_y), (steps, batch), device=accelerator.device)
    for i in range(20):
        engine.step(idx[i])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        engine.step(idx[i])
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    print(f"batch {batch}: {1e3 * host / steps:.3f} ms per step issued, "
          f"{1e3 * (time.perf_counter() - start) / steps:.3f} ms per step done")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(50):
            engine.step(idx[i])
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
