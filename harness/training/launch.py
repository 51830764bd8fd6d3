"""What one launched process sets up before it trains anything: its Accelerator (refusing what this
launch cannot run), the datasets on its device, and the environment record. Shared by a sweep
(training/sweep.py), `harness predict` and nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs

from harness import plan
from harness.config import DataSettings, SweepConfig
from harness.errors import ConfigError, DataError
from harness.training import data, images, measure, streamed, threads, workloads
from harness.training.engine import check_launch, own_optimizer


def make_accelerator(config: SweepConfig, cells: list[plan.Cell], sweep_dir: Path) -> Accelerator:
    """One Accelerator per process; refuses, before any training, what this launch cannot run."""
    graphs = any(c.settings.train.mode in ("cuda_graphs", "auto") for c in cells) and torch.cuda.is_available()
    # Without cpu=True, Accelerate only forms a process group on accelerators: on a CPU machine
    # `accelerate launch --multi_gpu` or torchrun would start P unconnected single processes.
    try:
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=config.train.mixed_precision,
                                  log_with=config.log_with or None, project_dir=sweep_dir,
                                  # autocast's weight cache cannot live across CUDA graph replays
                                  kwargs_handlers=[AutocastKwargs(cache_enabled=False)] if graphs else None)
    except (ValueError, ImportError) as exc:
        if not config.log_with:
            raise
        raise ConfigError(f"log_with: {' '.join(str(exc).split())[:200]}; install the tracker or remove it from "
                          f"log_with") from None
    plan.check_divisible(cells, accelerator.num_processes)
    for cell in cells:
        check_launch(cell.settings, accelerator)
    return accelerator


class DeviceData:
    """The datasets on the training device, each loaded once and split once per validation size a
    cell asks for: the built-in images (float32: 4x uint8's bytes, but no convert kernel in every
    step) or what the workload's own `load` returns."""

    def __init__(self, accelerator: Accelerator, folders: dict[str, Path] | None):
        self.accelerator, self.folders = accelerator, dict(folders or {})
        self.arrays: dict[str, images.MnistArrays] = {}
        self.splits: dict[tuple[str, int], data.Splits] = {}

    def for_cell(self, cell: plan.Cell) -> data.Splits:
        settings, given = cell.settings, cell.settings.data
        name = settings.dataset or _data_key(cell)
        key = (name, given.val_size, given.val_split, given.split_seed, given.input,
               given.train_eval_size if given.input == "loader" else None)
        if key not in self.splits:
            self.splits[key] = self._images(name, given) if settings.dataset else \
                self._own(workloads.resolve(cell), given)
        return self.splits[key]

    def _images(self, name: str, given: DataSettings) -> data.Splits:
        if name not in self.arrays:
            if name not in self.folders:
                with self.accelerator.main_process_first():  # one download; the others then find it verified
                    self.folders[name] = images.download(images.CACHE_DIR, name)
            self.arrays[name] = images.load_mnist(self.folders[name])
        held_out = (given.val_size, self._host(given), given.val_split, given.split_seed)
        return self._streamed(data.to_device(self.arrays[name], *held_out), given)

    def _own(self, workload: workloads.Workload, given: DataSettings) -> data.Splits:
        where = f"workload.data: {workload.specs['data']}"
        raw = workload.call("data", workload.load, dict(workload.options))
        if streamed.is_datasets(raw):
            if given.input != "loader":
                raise DataError(f"{where} returned Datasets; they are streamed: set data.input: loader (the device "
                                f"path holds tensors)")
            return streamed.from_datasets(raw, given.val_size, self.accelerator.device, where, given.val_split,
                                          given.split_seed, streamed.resident_size(given.train_eval_size),
                                          workload.collate, workload.call)
        held_out = (given.val_size, self._host(given), where, given.val_split, given.split_seed)
        return self._streamed(data.own_splits(raw, *held_out), given, workload.collate)

    def _host(self, given: DataSettings) -> torch.device:
        """Where the splits are built: the training device, or the host for the loader to stream."""
        return torch.device("cpu") if given.input == "loader" else self.accelerator.device

    def _streamed(self, splits: data.Splits, given: DataSettings, collate=None) -> data.Splits:
        if given.input != "loader":
            return splits
        return streamed.from_host(splits, self.accelerator.device, streamed.resident_size(given.train_eval_size),
                                  collate)


def _data_key(cell: plan.Cell) -> str:
    """The user's code answers alike wherever the same callables run with the same options."""
    return json.dumps(cell.workload or {}, sort_keys=True, default=str)


def _try_optimizer(cell: plan.Cell, splits) -> None:
    """workload.optimizer's make, called as a cell will call it, answers an optimizer (and a scheduler)."""
    workload = workloads.resolve(cell)
    if workload.optimizer is not None:
        own_optimizer(cell.settings.sized(splits.n_train), workload, workloads.build_model(workload).parameters())


def load_data(accelerator: Accelerator, folders: dict[str, Path] | None,
              cells: list[plan.Cell]) -> tuple[DeviceData, dict]:
    """Every cell's data onto the device, each workload tried on a few examples and each cell's
    batch checked against its training split, before anything is written: a workload that cannot
    train is one line, exit 2. Also the environment record with the start-up time this took."""
    # Denormal weights make small-batch CPU steps ~3x slower; flushing them changes no result we report.
    torch.set_flush_denormal(True)
    threads_record = threads.apply(cells[0].settings.train.threads)
    device_data = DeviceData(accelerator, folders)
    tried: set[str] = set()
    for cell in cells:
        splits = device_data.for_cell(cell)
        try:
            cell.settings.sized(splits.n_train).check_fits()
        except ValueError as exc:
            raise ConfigError(f"{cell.id}: {exc}") from None
        if (cell.settings.workload.builtin is None or cell.workload) and _data_key(cell) not in tried:
            tried.add(_data_key(cell))
            for warning in workloads.try_on(workloads.resolve(cell), splits, accelerator.device):
                if accelerator.is_main_process:
                    print(f"warning: {warning}", file=sys.stderr)
            _try_optimizer(cell, splits)
    measure.synchronize(accelerator.device)
    environment = measure.environment(accelerator.device, accelerator.num_processes,
                                      str(accelerator.distributed_type), accelerator.mixed_precision)
    environment |= threads_record
    environment["dataset_device_bytes"] = device_data.for_cell(cells[0]).nbytes
    environment["startup_s"] = measure.seconds_since_process_start()
    return device_data, environment
