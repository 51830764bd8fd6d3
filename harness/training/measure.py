"""Measurements that must be honest: synchronised timers, per-cell memory peaks, the environment.

Unknown is None (null in JSON), never 0 and never a guess.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness import timing
from harness.paths import REPO_ROOT
from harness.record.metrics import RANK_OPS


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a clock read at the edge of a window sees it finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncedTimer:
    """Wall time of a region with a device sync at each edge (never inside); with a monitor,
    also the GPU energy spent in it (None where unknown)."""

    def __init__(self, device: torch.device, monitor=None):
        self.device, self.monitor = device, monitor
        self.seconds = self.cpu_seconds = 0.0
        self.joules: float | None = None
        self.load_start = self.load_end = None  # the machine's 1-minute load average at the edges
        self.gpu_util_pct: float | None = None  # NVML's mean utilisation over the span (a GPU with NVML)

    def __enter__(self) -> SyncedTimer:
        synchronize(self.device)
        self._energy = self.monitor.mark_window(True) if self.monitor else None
        self.load_start = timing.load_average()
        self._cpu = time.process_time()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu  # user + system, every thread of the process
        self.load_end = timing.load_average()
        energy = self.monitor.mark_window(False) if self.monitor else None
        self.gpu_util_pct = self.monitor.window_util_pct if self.monitor else None
        if self._energy is not None and energy is not None:
            self.joules = (energy - self._energy) / 1000.0


REDUCE = {"max": lambda t: t.max(dim=0).values, "min": lambda t: t.min(dim=0).values,
          "sum": lambda t: t.sum(dim=0), "mean": lambda t: t.mean(dim=0)}


def over_ranks(accelerator, values: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """One gather for several per-rank numbers, each combined as record/metrics.py says (the
    slowest rank's time is the honest wall time of a data-parallel step, energy adds up, memory
    takes the worst). Unknown on any rank stays unknown (None), never 0."""
    if accelerator.num_processes == 1:  # nothing to combine, and no device round-trip
        return {k: None if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in values.items()}
    raw = torch.tensor([math.nan if v is None else float(v) for v in values.values()], dtype=torch.float64,
                       device=accelerator.device)
    table = accelerator.gather(raw).view(accelerator.num_processes, len(values))
    out = {}
    for i, (key, value) in enumerate(values.items()):
        reduced = REDUCE[RANK_OPS[key]](table[:, i]).item()
        out[key] = None if math.isnan(reduced) else (int(reduced) if isinstance(value, int) else reduced)
    return out


def reset_memory_peaks(device: torch.device) -> None:
    """Start a cell with fresh peaks: the CUDA allocator's, and Linux's VmHWM (peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        # "5" resets the peak resident set size (Linux >= 4.0, proc(5) clear_refs)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def memory_peaks(device: torch.device) -> dict[str, int | None]:
    cuda = device.type == "cuda"
    return {
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def peak_rss_bytes() -> int | None:
    return status_bytes("VmHWM")["VmHWM"]


def status_bytes(*keys: str) -> dict[str, int | None]:
    """Fields of /proc/self/status in bytes (VmHWM, VmRSS, VmData...); None where not known."""
    found: dict[str, int | None] = dict.fromkeys(keys)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def environment(device: torch.device, num_processes: int, distributed_type: str, mixed_precision: str) -> dict:
    import accelerate

    cuda = device.type == "cuda"
    return {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "device_count": torch.cuda.device_count() if cuda else None,
        "driver": nvidia_driver() if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "omp_wait_policy": timing.wait_policy(),
        "host": socket.gethostname(),
        "num_processes": num_processes,
        "distributed_type": distributed_type,
        "mixed_precision": mixed_precision,
        "git_commit": git_commit(),
        # under Slurm: the array job and task (or the plain job), and how often it was requeued
        "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
        "command": environment_command(),
    }


def environment_command() -> str:
    """How this process was started, to show how to reproduce it."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - no driver, no library: unknown, not an error
        return None


def git_commit() -> str | None:
    """The harness's commit, with '+dirty' when the working tree differs from it."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (imports, config, data onto the device included)."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - the process's age unknown: not an error
        return None


def add_energy(total: float | None, joules: float | None, empty_window: bool) -> float | None:
    """Energy adds up across the windows of an epoch (and the runs of a resumed one); unknown
    anywhere is unknown."""
    if empty_window or joules is None:
        return total if empty_window else None
    return joules if total is None else total + joules
