"""The data on the training device: the splits every step and evaluation index into, the sample
order (identical on every rank), and what a workload's own load() returns made into splits."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import DataError
from harness.training import batches
from harness.training.batches import Tree
from harness.training.images import MnistArrays


@dataclass(frozen=True)
class Splits:
    """Inputs and targets of each split, all on one device: flattened images scaled to [0, 1] and
    int64 labels for the built-ins; a tensor or a pytree of tensors (training/batches.py) each for
    a workload's own."""

    train_x: Tree
    train_y: Tree
    val_x: Tree
    val_y: Tree
    test_x: Tree
    test_y: Tree
    validation: str = "held_out"  # or "workload": load() returned its own "val" split

    def train_prefix(self, n: int) -> tuple[Tree, Tree]:
        """(inputs, targets) of the first `n` training examples (views)."""
        return self.prefix("train", n)

    def prefix(self, split: str, n: int) -> tuple[Tree, Tree]:
        """(inputs, targets) of the first `n` examples of the split: train, val or test (views)."""
        head = slice(None, n)
        return batches.take(getattr(self, f"{split}_x"), head), batches.take(getattr(self, f"{split}_y"), head)

    def record(self) -> dict[str, Any]:
        """What a cell's summary says of its validation split."""
        return {"val_examples": self.n_val, "validation_split": self.validation, "input_mode": "device"}

    def select(self, idx: torch.Tensor, part: slice | None = None) -> tuple[Tree, Tree]:
        """(inputs, targets) of a step's batch, this rank's sample indices on the device, gathered
        from the training split; or of one micro-batch's slice of it."""
        idx = idx if part is None else idx[part]
        return batches.take(self.train_x, idx), batches.take(self.train_y, idx)

    def trial_batch(self, count: int, generator: torch.Generator, device: torch.device) -> Any:
        """A capacity trial's batch, drawn with replacement: sample indices, which the step gathers."""
        return torch.randint(self.n_train, (count,), generator=generator).to(device)

    @property
    def n_train(self) -> int:
        return batches.count(self.train_y)

    @property
    def n_val(self) -> int:
        return batches.count(self.val_y)

    @property
    def n_test(self) -> int:
        return batches.count(self.test_y)

    @property
    def nbytes(self) -> int:
        """Device bytes held (each storage once: the built-in images' train and validation share one)."""
        tensors = batches.leaves((self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y))
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())


def hold_out(x: Tree, y: Tree, val_size: int, how: str = "first",
             seed: int | None = None) -> tuple[tuple[Tree, Tree], tuple[Tree, Tree]]:
    """((val_x, val_y), (train_x, train_y)): `val_size` examples held out of the training ones,
    by `data.val_split`: the first (TF's read_data_sets; views, no copy), the last, or a random
    set drawn with `data.split_seed` (the training rest keeps its original order)."""
    take = batches.take
    if how == "first":
        return (take(x, slice(None, val_size)), take(y, slice(None, val_size))), \
            (take(x, slice(val_size, None)), take(y, slice(val_size, None)))
    if how == "last":
        return (take(x, slice(-val_size, None)), take(y, slice(-val_size, None))), \
            (take(x, slice(None, -val_size)), take(y, slice(None, -val_size)))
    device = batches.leaves(x)[0].device
    val, train = (torch.from_numpy(i).to(device) for i in random_held_out(batches.count(x), val_size, seed))
    return (take(x, val), take(y, val)), (take(x, train), take(y, train))


def random_held_out(n: int, val_size: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """data.val_split=random: (validation, training) indices of `n` examples, each sorted."""
    order = np.random.default_rng(seed or 0).permutation(n)
    return np.sort(order[:val_size]), np.sort(order[val_size:])


def to_device(arrays: MnistArrays, val_size: int, device: torch.device, how: str = "first",
              seed: int | None = None) -> Splits:
    """Validation = `val_size` of the training images (`hold_out`), never the test set."""

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).copy()).to(device).float().div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(device)

    (val_x, val_y), (train_x, train_y) = hold_out(images(arrays.train_images), labels(arrays.train_labels), val_size,
                                                  how, seed)
    return Splits(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=images(arrays.test_images),
                  test_y=labels(arrays.test_labels))


def own_splits(raw: Any, val_size: int, device: torch.device, where: str, how: str = "first",
               seed: int | None = None) -> Splits:
    """What a workload's load() returned -> Splits on the device. DataError naming the key that is
    wrong, or the size that does not fit on the device."""
    if not isinstance(raw, dict) or not {"train", "test"} <= set(raw):
        shape = f"a dict with keys {sorted(map(str, raw))}" if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise DataError(f"{where} returned {shape}; return {{'train': (x, y), 'test': (x, y)}}, optionally 'val' too")
    unknown = sorted(set(map(str, raw)) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"{where} returned the key(s) {', '.join(unknown)}; only 'train', 'val' and 'test' are read")
    pairs = {key: _pair(raw[key], f"{where} returned {key!r}") for key in ("train", "val", "test") if key in raw}
    _same_structure(pairs, where)
    if "val" not in pairs:  # held out of the training examples, as for the images
        x, y = pairs["train"]
        if val_size >= batches.count(x):
            raise DataError(f"data.val_size={val_size} leaves none of the workload's {batches.count(x):,} training "
                            f"examples; lower data.val_size or return a 'val' split from load()")
        pairs["val"], pairs["train"] = hold_out(x, y, val_size, how, seed)
    size = sum(batches.nbytes(pair) for pair in pairs.values())
    free = free_bytes(device)
    if free is not None and size > free:
        raise DataError(f"{where}: the data takes {size / 2**30:.2f} GiB and {device} has {free / 2**30:.2f} GiB free; "
                        f"data.input=device holds the whole dataset there: stream it (data.input: loader) or load less")
    return Splits(*(batches.move(t, lambda leaf: leaf.to(device)) for key in ("train", "val", "test")
                    for t in pairs[key]), validation="workload" if "val" in raw else "held_out")


def _same_structure(pairs: dict[str, tuple[Tree, Tree]], where: str) -> None:
    """Every split's inputs (and targets) have the training split's structure: the model is called
    one way on all of them."""
    for i, role in enumerate(("inputs", "targets")):
        train = pairs["train"][i]
        for key, pair in pairs.items():
            if batches.structure(pair[i]) != batches.structure(train):
                raise DataError(f"{where} returned {key!r} {role} as {batches.describe(pair[i])} but 'train' {role} "
                                f"as {batches.describe(train)}; give every split the same structure (keys, nesting)")


def _pair(value: Any, where: str) -> tuple[Tree, Tree]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise DataError(f"{where} as a {type(value).__name__}; each split is a pair (inputs, targets)")
    x, y = (_tree(v, f"{where}[{i}]") for i, v in enumerate(value))
    if batches.count(x) != batches.count(y) or not batches.count(x):
        raise DataError(f"{where} with {batches.count(x)} inputs and {batches.count(y)} targets; give as many of "
                        f"each, at least one")
    return x, y


def _tree(value: Any, where: str) -> Tree:
    """A tensor, a numpy array, or a dict/tuple/list of them (nested) sharing the leading example
    dimension: every leaf a detached tensor."""
    if isinstance(value, np.ndarray):
        try:
            return _tree(torch.from_numpy(value), where)
        except TypeError:  # object arrays (ragged rows, strings), datetimes: nothing torch can hold
            raise DataError(f"{where} is a numpy array of dtype {value.dtype}, which torch cannot hold; give numbers "
                            f"(e.g. np.stack(rows).astype(np.float32)), or a dict/tuple/list of arrays") from None
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            raise DataError(f"{where} is a single number; give one row per example")
        return value.detach()
    if isinstance(value, dict):
        if not value or not all(isinstance(k, str) and k.isidentifier() for k in value):
            raise DataError(f"{where} is a dict with keys {sorted(map(repr, value))[:6]}; a dict of inputs is passed "
                            f"as model(**x): give it one or more keys that are Python names")
        tree: Tree = {k: _tree(v, f"{where}[{k!r}]") for k, v in value.items()}
    elif isinstance(value, (tuple, list)) and value:
        tree = type(value)(_tree(v, f"{where}[{i}]") for i, v in enumerate(value))
    else:
        raise DataError(f"{where} is {'an empty ' if isinstance(value, (dict, tuple, list)) else 'a '}"
                        f"{type(value).__name__}; give a torch.Tensor or numpy array (one row per example), or a "
                        f"dict, tuple or list of them")
    sizes = {len(leaf) for leaf in batches.leaves(tree)}
    if len(sizes) > 1:
        raise DataError(f"{where} holds tensors of {', '.join(map(str, sorted(sizes)))} rows ({batches.describe(tree)})"
                        f"; every tensor of a split holds one row per example: give them the same first dimension")
    return tree


def free_bytes(device: torch.device) -> int | None:
    """Memory the device has free now: the GPU's (CUDA), else the machine's available RAM."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        import psutil

        return psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - memory unknown (no /proc, a sandbox): not an error
        return None


class IndexStream:
    """The global sample order, identical on every rank: each rank slices the same indices.

    shuffle: consecutive batches walk a permutation and continue into a fresh one at its end
    (TF's next_batch); with_replacement: every index is drawn uniformly and independently.
    """

    def __init__(self, size: int, sampling: str, seed: int):
        self.size, self.sampling = size, sampling
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.cursor = 0

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "cursor": self.cursor}

    def restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.cursor = state["perm"], state["cursor"]

    def next(self, count: int) -> torch.Tensor:
        if self.sampling == "with_replacement":
            return torch.randint(self.size, (count,), generator=self.generator)
        parts = []
        while count > 0:
            if self.cursor == len(self.perm):
                self.perm, self.cursor = torch.randperm(self.size, generator=self.generator), 0
            take = min(count, len(self.perm) - self.cursor)
            parts.append(self.perm[self.cursor : self.cursor + take])
            self.cursor += take
            count -= take
        return torch.cat(parts)


def rank_slice(batch_size: int, rank: int, world: int) -> slice:
    """This rank's columns of a global batch: each of `world` processes takes batch_size / world."""
    per_rank = batch_size // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


def scheduled_rows(order: torch.Tensor, sizes: list[int], rank: int, world: int) -> list[torch.Tensor]:
    """This rank's indices of each step of an epoch whose steps take `sizes` examples of `order`."""
    starts = [0, *itertools.accumulate(sizes)]
    return [order[start:start + size][rank_slice(size, rank, world)] for start, size in zip(starts, sizes)]
