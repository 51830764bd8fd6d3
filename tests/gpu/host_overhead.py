"""Is the step host-bound? For each batch size, the harness's eager step on its lean path and
through Accelerate's wrappers (engine.build_engine, lean=False): milliseconds per step ISSUED (the
host's loop, no sync) against DONE (after the device finished), under
torch.cuda.set_sync_debug_mode("warn") so a hidden host-device sync inside a step is counted.
Issued close to done means the host sets the pace. Then the lean step's host ops, ranked by self
CPU time. Run by run_on_device.sh (on a CPU too, for its dry run); prints tables.

    python tests/gpu/host_overhead.py [STEPS] [BATCH ...]
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.profiler import ProfilerActivity, profile

from harness.training import data, images, workloads
from harness.training.bench import settings_for
from harness.training.engine import build_engine
from harness.training.measure import synchronize


def per_step(engine, idx: torch.Tensor, device: torch.device) -> tuple[float, float, int]:
    """(ms issued, ms done, syncs warned) per step over len(idx) steps after 20 untimed ones."""
    for i in range(min(20, len(idx))):
        engine.step(idx[i])
    synchronize(device)
    cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        for i in range(len(idx)):
            engine.step(idx[i])
        issued = time.perf_counter() - start
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    synchronize(device)
    done = time.perf_counter() - start
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return 1e3 * issued / len(idx), 1e3 * done / len(idx), syncs


def main(steps: int, batches: list[int]) -> None:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    splits = data.to_device(images.load_mnist(images.find_mnist(Path(os.environ["HARNESS_DATA_DIR"]))), 5000, device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; {steps} steps each")
    print(f"{'batch':>6} {'path':>10} {'issued ms':>10} {'done ms':>9} {'issued/done':>11} {'syncs':>6}")
    lean_16 = None
    for batch in batches:
        settings = settings_for(batch, "eager")
        idx = torch.randint(0, len(splits.train_y), (steps, batch), device=device)
        for lean in (True, False):
            engine = build_engine(settings, accelerator, splits, workloads.builtin(settings), lean=lean)
            issued, done, syncs = per_step(engine, idx, device)
            print(f"{batch:>6} {engine.path:>10} {issued:>10.3f} {done:>9.3f} {issued / done:>11.2f} {syncs:>6}",
                  flush=True)
            if lean and lean_16 is None:
                lean_16 = engine, idx
    engine, idx = lean_16
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(min(50, len(idx))):
            engine.step(idx[i])
        synchronize(device)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:]]
    main(arguments[0] if arguments else 200, arguments[1:] or [16, 4096])
