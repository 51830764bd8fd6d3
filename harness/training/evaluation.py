"""Scoring a model on the held-out splits with the workload's metric (accuracy by default) and loss,
outside every timed window: each rank scores its slice, then one sum over ranks. Shared by a cell's
epochs and checks (train) and predict's short runs."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn

from harness.training import batches
from harness.training.batches import Tree
from harness.training.data import Splits
from harness.training.workloads import Workload


@torch.no_grad()
def score(model: nn.Module, x: Tree, y: Tree, workload: Workload, chunk: int = 10_000) -> torch.Tensor:
    """[summed metric (correct predictions by default), summed loss] as a float64 device tensor, so
    the caller decides when to sync (and can sum it over ranks in one reduction)."""
    total = torch.zeros(2, dtype=torch.float64, device=batches.leaves(x)[0].device)
    for start in range(0, batches.count(x), chunk):
        part = slice(start, start + chunk)
        outputs = batches.call(model, batches.take(x, part))
        targets = batches.take(y, part)
        total[0] += workload.scores(outputs, targets).sum()
        total[1] += workload.summed_loss(outputs, targets)
    return total


def evaluate(model: nn.Module, splits: Splits, train_eval_size: int, accelerator: Accelerator,
             workload: Workload) -> list[float]:
    """Summed metric on (train prefix, validation, test): an epoch's accuracies, once divided by
    the sizes (the train prefix: min(train_eval_size, the training split))."""
    prefix = slice(None, train_eval_size)
    sets = [(batches.take(splits.train_x, prefix), batches.take(splits.train_y, prefix)),
            (splits.val_x, splits.val_y), (splits.test_x, splits.test_y)]
    return [correct for correct, _ in _scores(model, sets, accelerator, workload)]


def validate(model: nn.Module, splits: Splits, accelerator: Accelerator, workload: Workload) -> tuple[float, float]:
    """(summed metric, summed loss) on the validation split: a check within training."""
    correct, loss = _scores(model, [(splits.val_x, splits.val_y)], accelerator, workload)[0]
    return correct, loss


def _scores(model: nn.Module, sets: list[tuple[Tree, Tree]], accelerator: Accelerator,
            workload: Workload) -> list[list[float]]:
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    totals = torch.stack([score(model, batches.part(x, rank, world), batches.part(y, rank, world), workload)
                          for x, y in sets])
    model.train()
    return accelerator.reduce(totals, "sum").tolist()
