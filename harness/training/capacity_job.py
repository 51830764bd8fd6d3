"""capacity.json: written by `harness capacity` (and by a sweep whose cells ask for
`train.micro_batch_size: auto` where none is on record for this launch), read by those cells."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from accelerate import Accelerator

from harness import plan
from harness.config import SweepConfig
from harness.errors import ConfigError
from harness.record import documents, results
from harness.record.schema import Invalid
from harness.training import capacity, measure, workloads
from harness.training.launch import DeviceData

CAPACITY_FILE = "capacity.json"
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_limits(text: str | None, processes: int) -> list[int | None]:
    """`--memory-limit`: one size for every process, or one per process (rank 0 first), e.g. 2GiB
    or 3GiB,1.5GiB."""
    if not text:
        return [None] * processes
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", part)
        if not match or match[2].lower() not in UNITS:
            raise ConfigError(f"--memory-limit {text!r}: {part.strip()!r} is not a size; write e.g. 2GiB, 1500MiB or "
                              f"a number of bytes (one, or one per process separated by commas)")
        sizes.append(int(float(match[1]) * UNITS[match[2].lower()]))
    if len(sizes) not in (1, processes):
        raise ConfigError(f"--memory-limit gives {len(sizes)} sizes for {processes} processes; give one, or one "
                          f"per process")
    return sizes * processes if len(sizes) == 1 else sizes


def upper_bound(cells: list[plan.Cell], processes: int) -> int:
    """The largest micro-batch any cell could use: its B/P."""
    return max(c.settings.batch_plan.switches[-1][1] // processes for c in cells)


def measure_capacity(config: SweepConfig, cells: list[plan.Cell], accelerator: Accelerator, device_data: DeviceData,
                     sweep_dir: Path, margin: float = capacity.DEFAULT_MARGIN, limits: list[int | None] | None = None,
                     log=None) -> dict:
    """Search the first cell's workload (memory does not depend on the rate or the seed), write
    capacity.json from the main process and return its document."""
    cell = cells[0]
    splits = device_data.for_cell(cell)
    limit = (limits or [None] * accelerator.num_processes)[accelerator.process_index]
    capacity.apply_memory_limit(limit)
    baseline = measure.status_bytes("VmData", "VmRSS")
    upper = upper_bound(cells, accelerator.num_processes)
    trials = capacity.search(cell.settings.sized(splits.n_train), accelerator, splits, workloads.resolve(cell), upper,
                             log=log)
    environment = measure.environment(accelerator.device, accelerator.num_processes,
                                      str(accelerator.distributed_type), accelerator.mixed_precision)
    # the limit in the memory model's currency: RLIMIT_DATA counts mapped data, the model resident
    # bytes, so the mapped-but-not-resident part at the start (torch's libraries) comes off it
    device_bytes = limit - (baseline["VmData"] - baseline["VmRSS"]) if limit is not None else _device_bytes(accelerator)
    doc = {"schema_version": documents.CAPACITY_SCHEMA_VERSION, "sweep": config.name, "cell": cell.id,
           "device": environment.get("device_name") or str(accelerator.device),
           "device_type": accelerator.device.type, "num_processes": accelerator.num_processes,
           "mixed_precision": accelerator.mixed_precision, "engine_mode": cell.settings.train.mode,
           "memory_limits_bytes": limits, "start_data_bytes": baseline["VmData"], "measured_utc": results.utc_now(),
           "trials": [t.record() for t in trials],
           **capacity.summarize(trials, upper, margin, device_bytes)}
    if accelerator.is_main_process:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        results.write_atomic(sweep_dir / CAPACITY_FILE, json.dumps(doc, indent=2) + "\n")
    return doc


def _device_bytes(accelerator: Accelerator) -> int | None:
    if accelerator.device.type == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(accelerator.device).total_memory)
    return None


def read_capacity(sweep_dir: Path, accelerator: Accelerator) -> dict | None:
    """capacity.json where it was measured on this kind of launch (device type, processes,
    precision); None otherwise."""
    if not (sweep_dir / CAPACITY_FILE).is_file():
        return None
    try:
        doc = documents.read_capacity(sweep_dir / CAPACITY_FILE)
    except Invalid as exc:
        raise ConfigError(f"{exc}; delete it or run `harness capacity` again") from None
    same = (doc.get("device_type") == accelerator.device.type and doc.get("num_processes") == accelerator.num_processes
            and doc.get("mixed_precision") == accelerator.mixed_precision)
    return doc if same and isinstance(doc.get("safe_micro_batch_size"), int) else None


def micro_batch_for(setting: int | str | None, local_batch: int, capacity_doc: dict | None,
                    failed_micro: int | None = None) -> int:
    """A cell's micro-batch per process: B/P by default; a number, at most B/P (it must divide it);
    auto, the largest divisor of B/P within capacity.json's safe size, and below the micro-batch
    a previous run of the cell ran out of memory with."""
    if setting is None:
        return local_batch
    if isinstance(setting, int):
        return min(setting, local_batch)
    cap = local_batch if capacity_doc is None or capacity_doc.get("bounded_by_need") else \
        capacity_doc["safe_micro_batch_size"]
    if failed_micro is not None:
        cap = min(cap, max(1, failed_micro // 2))
    cap = max(1, min(cap, local_batch))
    return next(d for d in range(cap, 0, -1) if local_batch % d == 0)


def capacity_command(args, config: SweepConfig, cells: list[plan.Cell], sweep_dir: Path) -> tuple[int, dict | None]:
    """`harness capacity`: the search for the config's first cell, capacity.json, one line."""
    from harness.training import images

    doc = run_capacity(config, cells, sweep_dir, images.data_folders({c.settings.dataset for c in cells},
                                                                     args.data_dir), args.margin, args.memory_limit)
    answer = {key: doc[key] for key in ("device", "num_processes", "largest_fits", "first_fails", "bounded_by_need",
                                        "safe_micro_batch_size", "margin", "predicted_largest")}
    return 0, answer


def run_capacity(config: SweepConfig, cells: list[plan.Cell], sweep_dir: Path, folders, margin: float = 0.1,
                 memory_limit: str | None = None, quiet: bool = False) -> dict:
    """The search in this process (one rank of a launch), capacity.json written; its document."""
    from harness.training.launch import load_data, make_accelerator

    results.check_writable(sweep_dir)
    if not 0 <= margin < 1:
        raise ConfigError(f"--margin {margin}: a share of the largest batch that fits, in [0, 1); e.g. 0.1")
    accelerator = make_accelerator(config, cells, sweep_dir)
    limits = parse_limits(memory_limit, accelerator.num_processes)
    device_data, _ = load_data(accelerator, folders, cells[:1])
    main = accelerator.is_main_process and not quiet

    def say(t: capacity.Trial) -> None:
        if main:
            print(f"micro-batch {t.micro_batch}: {'fits' if t.fits else 'does not fit'} ({t.seconds:.1f} s)",
                  file=sys.stderr)

    doc = measure_capacity(config, cells, accelerator, device_data, sweep_dir, margin, limits, say)
    if main:
        print(describe(doc))
    accelerator.wait_for_everyone()
    return doc


def describe(doc: dict) -> str:
    """capacity.json's answer in one line."""
    per = "per process" if doc["num_processes"] > 1 else "on this device"
    if doc["bounded_by_need"]:
        return (f"capacity: every micro-batch up to {doc['upper']} (the largest the sweep needs) fits {per} "
                f"({doc['device']}); no cell needs accumulation")
    return (f"capacity: micro-batch {doc['largest_fits']} fits {per} and {doc['first_fails']} does not "
            f"({doc['device']}, {len(doc['trials'])} trials); with the {doc['margin']:.0%} margin: "
            f"{doc['safe_micro_batch_size']} (train.micro_batch_size=auto uses it)")
