"""Was a time disturbed? What the timed steps competed with, judged by three rules.

Every timed span records the process's CPU time (user + system, all its threads) and the
machine's 1-minute load average at its two edges (training/measure.SyncedTimer). From them:
- CPU share = CPU time / (wall time x intra-op threads). A process that had its cores reads
  near 1 (torch's OpenMP threads spin a while when they wait for work, so waiting counts too);
  one whose threads queued for cores behind other work reads less. Judged on a CPU only: on a
  GPU the host thread mostly waits for the device.
- load per core: the median of the load average at the edges of the timed windows, over the
  machine's cores (the load average counts the whole machine's runnable threads, whatever cores
  this process owns). Training itself keeps about one runnable thread per core it uses.
- spread: the slowest over the fastest window's time per step, for windows of equal work (a
  cell's epochs from the second on: the first carries the cell's start), and the robust CV
  (1.4826 x median absolute deviation / median).
The thresholds and the runs behind them: docs/measurement.md ("Disturbed timing").
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Any

MIN_CPU_SHARE = 0.75  # below: the threads waited for cores
MAX_LOAD_PER_CORE = 1.5  # above: more runnable threads than cores, by half again
MAX_SPREAD = 2.0  # above: one window took twice the time per step of another
BUSY_LOAD_PER_CORE = 1.0  # before training starts: every core already has a runnable thread


def machine_cores() -> int:
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable and running threads), None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_share(cpu_seconds: float | None, wall_seconds: float | None, threads: int) -> float | None:
    """CPU time / (wall time x intra-op threads): near 1 where the threads had their cores."""
    if cpu_seconds is None or not wall_seconds or wall_seconds <= 0:
        return None
    return cpu_seconds / (wall_seconds * threads)


def wait_policy() -> str | None:
    """OMP_WAIT_POLICY as this process has it (None: OpenMP's default, which spins a while)."""
    return os.environ.get("OMP_WAIT_POLICY") or None


def reasons(share: float | None, load: float | None, spread: float | None, device_type: str,
            cores: int | None = None, processes: int = 1) -> list[str]:
    """Why a time was disturbed, in words; empty where it was not (or nothing is known). The
    share rule is measured for one process with OpenMP's default wait: under
    OMP_WAIT_POLICY=PASSIVE waiting threads sleep, so a quiet run's CPU share is low too (0.70 at
    batch 128 on 2 cores), and with several processes the ranks wait for each other in the
    gradient all-reduce, which is not CPU time either; it is not applied there."""
    cores = cores or machine_cores()
    found = []
    spins = (wait_policy() or "").upper() != "PASSIVE"
    if device_type == "cpu" and spins and processes == 1 and share is not None and share < MIN_CPU_SHARE:
        found.append(f"CPU share {share:.0%} (below {MIN_CPU_SHARE:.0%}: its threads waited for cores)")
    if load is not None and load > MAX_LOAD_PER_CORE * cores:
        found.append(f"load average {load:.1f} on {cores} core{'s' if cores > 1 else ''}")
    if spread is not None and spread > MAX_SPREAD:
        found.append(f"its windows' time per step spread {spread:.1f}x")
    return found


def conditions(rows: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], cores: int,
               device_type: str, processes: int = 1) -> dict[str, Any]:
    """A cell's timing conditions (result.json summary keys) from its epochs.csv rows and
    evals.csv checks, and whether they disturbed it, with the reasons in words."""
    timed = [r for r in rows if r.get("train_seconds") and r.get("cpu_share") is not None]
    seconds = sum(r["train_seconds"] for r in timed)
    share = sum(r["cpu_share"] * r["train_seconds"] for r in timed) / seconds if seconds > 0 else None
    loads = [e[k] for e in evals for k in ("window_load_start", "window_load_end") if e.get(k) is not None] \
        or [r["load_at_end"] for r in rows if r.get("load_at_end") is not None]
    load = statistics.median(loads) if loads else None
    spread, cv = spread_of([r["time_per_image_s"] for r in rows[1:] if r.get("time_per_image_s")])
    found = reasons(share, load, spread, device_type, processes=processes)
    return {"cpu_share": share, "load_average": load, "cores_owned": cores, "machine_cores": machine_cores(),
            "time_spread": spread, "time_cv": cv, "timing_disturbed": bool(found),
            "timing_disturbed_reason": "; ".join(found) or None}


def spread_of(times: Sequence[float]) -> tuple[float | None, float | None]:
    """(spread, robust CV) of equal-work times; (None, None) with fewer than two. The spread is
    slowest / fastest for up to 9 (a cell's epochs), the 90th over the 10th percentile for more
    (a timing pass's 20-step windows, where one window's garbage collection is not a busy machine)."""
    if len(times) < 2 or min(times) <= 0:
        return None, None
    median = statistics.median(times)
    mad = statistics.median(abs(t - median) for t in times)
    if len(times) < 10:
        return max(times) / min(times), 1.4826 * mad / median
    deciles = statistics.quantiles(times, n=10)
    return deciles[-1] / deciles[0], 1.4826 * mad / median


def busy_now() -> str | None:
    """Before anything is timed: a warning when every core of the machine already has work."""
    load, cores = load_average(), machine_cores()
    if load is None or load <= BUSY_LOAD_PER_CORE * cores:
        return None
    return (f"the machine is busy before training starts (load average {load:.1f} on {cores} "
            f"core{'s' if cores > 1 else ''}): times measured now compete with that work and are marked "
            "timing_disturbed where they suffer; run alone for times to trust, or where you cannot, "
            "OMP_WAIT_POLICY=PASSIVE or --threads 1 cut the slowdown (10.7x to 1.4x and 1.6x at batch 128 on 2 "
            "cores: results/bench-cpu/README.md)")
