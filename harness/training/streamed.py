"""The streaming input path (data.input: loader): the training split stays where the workload keeps
it, a map-style Dataset (or host tensors), and one DataLoader per process feeds every step its B/P
examples of the same global order the device path walks (training/data.IndexStream: same seed,
same examples in the same steps). Worker processes (data.workers), pinned memory and a copy to the
device on a side stream, one batch ahead; the time a step waits for its batch is counted, inside
its timed window, and recorded beside it (input_wait_seconds).

What stays on the device: the validation and test splits, and a prefix of the training split (the
train-accuracy prefix, the diagnostics' probe, the workload's trial examples).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from harness.errors import DataError
from harness.training import batches
from harness.training.batches import Tree
from harness.training.data import Splits, random_held_out
from harness.training.diagnostics import NOISE_IMAGES

PREFETCH = 4  # batches each worker keeps ready (DataLoader's prefetch_factor)
CHUNK = 1024  # examples collated at a time when a split goes onto the device


@dataclass(frozen=True)
class StreamedSplits(Splits):
    """Splits whose training examples come from `train_set` through a DataLoader; train_x/train_y
    hold only its first examples, on the device."""

    train_set: Dataset | None = None
    collate: Callable[[list], Any] = default_collate

    @property
    def n_train(self) -> int:
        return len(self.train_set)

    def record(self) -> dict[str, Any]:
        return super().record() | {"input_mode": "loader"}

    def select(self, pair: tuple[Tree, Tree], part: slice | None = None) -> tuple[Tree, Tree]:
        """The loader's (inputs, targets), already on the device; or one micro-batch's slice of it."""
        return pair if part is None else (batches.take(pair[0], part), batches.take(pair[1], part))

    def trial_batch(self, count: int, generator: torch.Generator, device: torch.device) -> Any:
        """A capacity trial's batch: `count` resident examples, drawn with replacement, on the device."""
        idx = torch.randint(batches.count(self.train_y), (count,), generator=generator).to(device)
        return batches.take(self.train_x, idx), batches.take(self.train_y, idx)


class TreeDataset(Dataset):
    """Host tensors (a pytree each) as a map-style Dataset: item i is (inputs[i], targets[i]), and
    torch's default collate stacks items back into exactly what indexing by the batch would give."""

    def __init__(self, x: Tree, y: Tree):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return batches.count(self.y)

    def __getitem__(self, i: int) -> tuple[Tree, Tree]:
        return batches.take(self.x, i), batches.take(self.y, i)


def is_datasets(raw: Any) -> bool:
    """load() answered Datasets (the streaming path) rather than tensors."""
    return isinstance(raw, dict) and any(isinstance(v, Dataset) for v in raw.values())


def from_host(host: Splits, device: torch.device, resident: int, collate: Callable | None = None) -> StreamedSplits:
    """Splits built on the host (tensors) made streamed: the training split a TreeDataset."""
    return _streamed(TreeDataset(host.train_x, host.train_y), (host.val_x, host.val_y), (host.test_x, host.test_y),
                     collate or default_collate, device, resident, host.validation)


def from_datasets(raw: dict, val_size: int, device: torch.device, where: str, how: str, seed: int | None,
                  resident: int, collate: Callable | None, call: Callable) -> StreamedSplits:
    """load()'s {"train": Dataset, "test": Dataset[, "val": Dataset]} -> StreamedSplits; `call` runs
    the user's code (the Dataset's items, the collate) so that a failure names its role."""
    collate = collate or default_collate
    unknown = sorted(set(map(str, raw)) - {"train", "val", "test"})
    if unknown or not {"train", "test"} <= set(raw) or not all(isinstance(v, Dataset) for v in raw.values()):
        raise DataError(f"{where} returned {{{', '.join(f'{k!r}: {type(v).__name__}' for k, v in raw.items())}}}; "
                        f"return {{'train': Dataset, 'test': Dataset}} (map-style), optionally 'val' too")
    train = raw["train"]
    if "val" in raw:
        val = raw["val"]
    else:
        if val_size >= len(train):
            raise DataError(f"data.val_size={val_size} leaves none of the workload's {len(train):,} training "
                            f"examples; lower data.val_size or return a 'val' Dataset from load()")
        val_idx, train_idx = _held_out(len(train), val_size, how, seed)
        val, train = Subset(train, val_idx), Subset(train, train_idx)
    pairs = [_collated(ds, range(len(ds)), collate, f"{where} {key!r}", call)
             for key, ds in (("val", val), ("test", raw["test"]))]
    return _streamed(train, *pairs, collate, device, resident, "workload" if "val" in raw else "held_out", call)


def _streamed(train: Dataset, val: tuple[Tree, Tree], test: tuple[Tree, Tree], collate: Callable,
              device: torch.device, resident: int, validation: str, call: Callable | None = None) -> StreamedSplits:
    x, y = _collated(train, range(min(resident, len(train))), collate, "the training split", call)
    on_device = [batches.move(t, lambda leaf: leaf.to(device)) for t in (x, y, *val, *test)]
    return StreamedSplits(*on_device, validation=validation, train_set=train, collate=collate)


def _collated(dataset: Dataset, indices: range, collate: Callable, where: str,
              call: Callable | None = None) -> tuple[Tree, Tree]:
    """The examples at `indices`, collated CHUNK at a time and joined: one (inputs, targets) pair.
    `call(role, fn, *args)` runs the user's code (its Dataset's items, its collate)."""
    call = call or (lambda _role, fn, *args: fn(*args))
    parts = [_pair(call("collate", collate, [call("data", dataset.__getitem__, i) for i in indices[k:k + CHUNK]]),
                   where) for k in range(0, len(indices), CHUNK)]
    if not parts:
        raise DataError(f"{where} is empty; give at least one example")
    return pytree.tree_map(lambda *leaves: torch.cat(leaves), *parts) if len(parts) > 1 else parts[0]


def _pair(batch: Any, where: str) -> tuple[Tree, Tree]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise DataError(f"{where}: a collated batch is a {type(batch).__name__}; each item (and the collate) gives "
                        f"a pair (inputs, targets)")
    x, y = batch
    if not batches.leaves(x) or not batches.leaves(y) or batches.count(x) != batches.count(y):
        raise DataError(f"{where}: a collated batch holds {batches.describe(x)} inputs for {batches.describe(y)} "
                        f"targets; give tensors with one row per example, as many of each")
    return x, y


def _held_out(n: int, val_size: int, how: str, seed: int | None) -> tuple[list[int], list[int]]:
    """(validation, training) indices, as training/data.hold_out draws them from tensors."""
    if how == "first":
        return list(range(val_size)), list(range(val_size, n))
    if how == "last":
        return list(range(n - val_size, n)), list(range(n - val_size))
    return tuple(i.tolist() for i in random_held_out(n, val_size, seed))


def feed(splits: Splits, rows: torch.Tensor | list[torch.Tensor], start: int, settings, accelerator,
         epoch: int) -> Callable[[int], Any]:
    """step -> this rank's batch for an epoch whose order's columns for this rank are `rows`: its
    sample indices on the device, or the loader's pair (from step `start` on)."""
    if not isinstance(splits, StreamedSplits):  # a list: each step's own indices (train.batch_schedule)
        return [r.to(accelerator.device) for r in rows].__getitem__ if isinstance(rows, list) else \
            rows.to(accelerator.device).__getitem__
    seed = hash((settings.train.seed, epoch, accelerator.process_index)) & (2**62 - 1)  # ints hash alike everywhere
    return LoaderFeed(splits, rows, start, settings.data.workers, accelerator.device, seed)


def resident_size(train_eval_size: int) -> int:
    """Training examples kept on the device: the train-accuracy prefix and the diagnostics' probe."""
    return max(train_eval_size, NOISE_IMAGES)


class LoaderFeed:
    """One epoch's batches for this rank from step `start` on: `feed(step)` is step's (inputs,
    targets) on the device. `wait_seconds` adds up the time spent waiting for the DataLoader."""

    def __init__(self, splits: StreamedSplits, rows: torch.Tensor | list[torch.Tensor], start: int, workers: int,
                 device: torch.device, seed: int):
        pinned = device.type == "cuda"
        # the workers' seeds come from this generator, never from torch's global one (a model's dropout)
        sampler = rows[start:].tolist() if isinstance(rows, torch.Tensor) else [r.tolist() for r in rows[start:]]
        self.loader = DataLoader(splits.train_set, batch_sampler=sampler, num_workers=workers,
                                 collate_fn=splits.collate, pin_memory=pinned, prefetch_factor=PREFETCH if workers
                                 else None, generator=torch.Generator().manual_seed(seed))
        self.batches, self.device = iter(self.loader), device
        self.copies = torch.cuda.Stream(device) if pinned else None
        self.step, self.wait_seconds = start, 0.0
        self.ahead = self._stage()  # outside every clock: the first batch is ready when the epoch starts

    def __call__(self, step: int) -> tuple[Tree, Tree]:
        if step != self.step or self.ahead is None:
            raise RuntimeError(f"the loader feeds step {self.step}, not {step}")
        batch = self.ahead
        if self.copies is not None:  # the copy made on the side stream is used on this one
            torch.cuda.current_stream(self.device).wait_stream(self.copies)
            for leaf in batches.leaves(batch):
                leaf.record_stream(torch.cuda.current_stream(self.device))
        self.step += 1
        self.ahead = self._stage()
        return batch

    def _stage(self) -> tuple[Tree, Tree] | None:
        """The next batch, waited for (counted) and copied towards the device."""
        start = time.perf_counter()
        try:
            batch = next(self.batches)
        except StopIteration:
            return None
        finally:
            self.wait_seconds += time.perf_counter() - start
        x, y = _pair(batch, "workload.collate")
        if self.copies is None:
            return batches.move(x, lambda t: t.to(self.device)), batches.move(y, lambda t: t.to(self.device))
        with torch.cuda.stream(self.copies):
            return tuple(batches.move(t, lambda leaf: leaf.to(self.device, non_blocking=True)) for t in (x, y))
