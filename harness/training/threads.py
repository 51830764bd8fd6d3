"""One CPU thread policy for every way a process is started.

`accelerate launch` and torchrun set OMP_NUM_THREADS=1 before Python starts; `harness run` leaves
torch its default (every core). The same cell then measured several times apart, and the sweet
spot, a ratio of times, moved with the entry point. So every training process sets its own count
here: `train.threads` (or `--threads`) when given, else the cores this process may run on divided
by the processes sharing the node. The count and where it came from go into every result.json.
"""

from __future__ import annotations

import os

import torch


def cores_owned() -> int:
    """The cores this process may run on: its affinity mask (Slurm's task/affinity, taskset,
    cgroups' cpusets), capped by SLURM_CPUS_PER_TASK where Slurm gave one but did not bind."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cores


def processes_per_node() -> int:
    """How many training processes share this node's cores: torchrun and accelerate launch say so
    in LOCAL_WORLD_SIZE; a plain `harness run` is one."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(local) if local.isdigit() and int(local) > 0 else 1


def policy(requested: int | None) -> tuple[int, str]:
    """(threads, why): the requested count, else cores owned // processes per node (at least 1)."""
    if requested is not None:
        return requested, "train.threads"
    cores, local = cores_owned(), processes_per_node()
    return max(1, cores // local), f"auto: {cores} cores / {local} process{'es' if local > 1 else ''} per node"


def apply(requested: int | None) -> dict[str, int | str]:
    """Set torch's intra-op threads by the policy; the fields a result's environment records."""
    threads, source = policy(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return {"cpu_threads": threads, "threads_source": source}
