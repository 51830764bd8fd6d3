"""The largest micro-batch that fits (`harness capacity`): doubling, then bisection, each trial a few
real optimizer steps of the workload, in the cell's engine mode and precision, every rank agreeing.

Trials run in this process, one after another, the memory released between them: a subprocess per
trial would pay a new CUDA context and process group each time, and would not measure the memory
the cells of the sweep will share with the model, the data and the allocator's cache. A trial's
backward runs under DDP's no_sync, so that a rank whose allocation fails never leaves another
waiting inside a collective; after each trial the ranks agree with one all-gather of "fits" (it
fits where every rank's fitted). The gradient buckets DDP all-reduces exist from the model's wrapping on, so they
count; NCCL's own transfer buffers do not, which the safety margin (default 10%) covers.

On a CPU an allocation failure under a limit on this process (`--memory-limit`, RLIMIT_DATA: the
memory it may hold, the data already loaded included) stands in for device memory; on CUDA,
torch.cuda.OutOfMemoryError.
"""

from __future__ import annotations

import ctypes
import gc
import math
import resource
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils.memory import should_reduce_batch_size

from harness.config import CUDA_GRAPH_EAGER_STEPS, CellSettings
from harness.training import measure
from harness.training.data import Splits
from harness.training.engine import build_engine
from harness.training.workloads import Workload

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None
M_MMAP_THRESHOLD = -3  # glibc's mallopt: a fixed threshold also stops its dynamic raising
DEFAULT_MARGIN = 0.10
# bisection stops once the bracket is within this share of the batch that fits (at least 1 example)
RESOLUTION = 1 / 16


@dataclass(frozen=True)
class Trial:
    micro_batch: int
    fits: bool  # on every rank
    fits_by_rank: list[bool]
    peaks: dict[str, int | None]  # the worst rank's peak allocated / reserved / RSS / NVML bytes
    seconds: float
    error: str | None  # this rank's allocation failure, in a few words

    def record(self) -> dict:
        return {"micro_batch_size": self.micro_batch, "fits": self.fits, "fits_by_rank": self.fits_by_rank,
                **self.peaks,
                "seconds": round(self.seconds, 3), "error": self.error}


def apply_memory_limit(limit_bytes: int | None) -> None:
    """RLIMIT_DATA on this process: an allocation beyond it fails, as a device's memory would."""
    if limit_bytes is not None:
        if _LIBC is not None:  # every large block its own mapping, unmapped when freed: no heap that only grows
            _LIBC.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def trial(settings: CellSettings, accelerator: Accelerator, splits: Splits, workload: Workload, micro_batch: int,
          steps: int) -> Trial:
    """`steps` optimizer steps at `micro_batch` examples per process, drawn with replacement from the
    training split; then every rank learns whether all of them fitted."""
    processes = accelerator.num_processes
    sized = settings.model_copy(update={"train": settings.train.model_copy(update={
        "batch_size": micro_batch * processes, "micro_batch_size": None, "epochs": 1,
        "images_per_epoch": micro_batch * processes * steps})}).sized(splits.n_train)
    measure.reset_memory_peaks(accelerator.device)
    start, error = time.perf_counter(), None
    engine = None
    try:
        engine = build_engine(sized, accelerator, splits, workload)
        generator = torch.Generator().manual_seed(settings.train.seed + accelerator.process_index)
        for _ in range(steps):
            batch = splits.trial_batch(micro_batch, generator, accelerator.device)
            with accelerator.no_sync(engine.model):  # no collective that a failed rank would leave waiting
                engine.step(batch)
        measure.synchronize(accelerator.device)
    except Exception as exc:  # only an allocation failure is an answer; anything else is raised
        if not should_reduce_batch_size(exc):
            raise
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
    seconds = time.perf_counter() - start
    peaks = measure.memory_peaks(accelerator.device) | {"nvml_used_bytes": _nvml_used(accelerator.device)}
    del engine
    release(accelerator)
    by_rank = _by_rank(accelerator, error is None)
    return Trial(micro_batch=micro_batch, fits=all(by_rank), fits_by_rank=by_rank, peaks=_worst(accelerator, peaks),
                 seconds=seconds, error=error)


def search(settings: CellSettings, accelerator: Accelerator, splits: Splits, workload: Workload, upper: int,
           steps: int | None = None, log=None) -> list[Trial]:
    """Doubling from 1 while a trial fits (up to `upper`, the largest micro-batch anything needs),
    then bisection between the last that fitted and the first that did not."""
    steps = steps or (CUDA_GRAPH_EAGER_STEPS + 2 if accelerator.device.type == "cuda" else 2)
    trials: list[Trial] = []

    def run(micro: int) -> bool:
        trials.append(trial(settings, accelerator, splits, workload, micro, steps))
        if log is not None:
            log(trials[-1])
        return trials[-1].fits

    low, high = 0, None
    micro = 1
    while high is None:
        if run(micro):
            low = micro
            if micro >= upper:
                return trials
            micro = min(2 * micro, upper)
        else:
            high = micro
    while high - low > max(1, math.floor(low * RESOLUTION)):
        middle = (low + high) // 2
        low, high = (middle, high) if run(middle) else (low, middle)
    return trials


def summarize(trials: list[Trial], upper: int, margin: float, limit_bytes: int | None) -> dict:
    """capacity.json's answer: the largest that fitted, the bracket, the safe micro-batch (the
    margin below it) and a memory model (fixed + per-example bytes) fitted to the trials that fitted."""
    fitted = [t for t in trials if t.fits]
    failed = [t.micro_batch for t in trials if not t.fits]
    largest = max((t.micro_batch for t in fitted), default=0)
    first_failed = min(failed, default=None)
    model = memory_model(fitted)
    predicted = None
    if model is not None and limit_bytes is not None and model["per_example_bytes"] > 0:
        predicted = int((limit_bytes - model["fixed_bytes"]) // model["per_example_bytes"])
    return {"largest_fits": largest, "first_fails": first_failed, "bounded_by_need": first_failed is None,
            "upper": upper, "margin": margin, "safe_micro_batch_size": max(1, math.floor(largest * (1 - margin)))
            if largest else 0, "memory_model": model, "memory_limit_bytes": limit_bytes,
            "predicted_largest": predicted}


def memory_model(fitted: list[Trial]) -> dict | None:
    """Least squares of peak memory on micro-batch over the trials that fitted (the key it reads:
    allocated on CUDA, resident on a CPU); None with fewer than two distinct sizes."""
    key = "peak_allocated_bytes" if any(t.peaks.get("peak_allocated_bytes") for t in fitted) else "peak_rss_bytes"
    points = [(t.micro_batch, t.peaks[key]) for t in fitted if t.peaks.get(key)]
    if len({b for b, _ in points}) < 2:
        return None
    n = len(points)
    mean_b, mean_m = sum(b for b, _ in points) / n, sum(m for _, m in points) / n
    slope = sum((b - mean_b) * (m - mean_m) for b, m in points) / sum((b - mean_b) ** 2 for b, _ in points)
    return {"reads": key, "fixed_bytes": int(mean_m - slope * mean_b), "per_example_bytes": slope}


def release(accelerator: Accelerator) -> None:
    """What a trial held: Accelerate's references to its model and optimizer, the garbage, the
    device's cache."""
    accelerator.free_memory()
    gc.collect()
    if accelerator.device.type == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:  # glibc keeps freed heap pages counted against the limit until trimmed
        _LIBC.malloc_trim(0)


def _by_rank(accelerator: Accelerator, fits: bool) -> list[bool]:
    """Every rank's answer, in rank order (one all-gather): the trial fits where all of them do."""
    if accelerator.num_processes == 1:
        return [fits]
    return [bool(v) for v in accelerator.gather(torch.tensor([int(fits)], device=accelerator.device)).tolist()]


def _worst(accelerator: Accelerator, peaks: dict[str, int | None]) -> dict[str, int | None]:
    """Each peak's largest over the ranks (unknown on one: unknown)."""
    if accelerator.num_processes == 1:
        return peaks
    raw = torch.tensor([math.nan if v is None else float(v) for v in peaks.values()], dtype=torch.float64,
                       device=accelerator.device)
    table = accelerator.gather(raw).view(accelerator.num_processes, len(peaks))
    worst = table.max(dim=0).values.tolist()
    return {k: None if math.isnan(v) else int(v) for k, v in zip(peaks, worst, strict=True)}


def _nvml_used(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001 - NVML absent: the torch figures stand
        return None
