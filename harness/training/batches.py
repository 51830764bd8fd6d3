"""A split's inputs and targets as the workload gives them: a tensor, or a dict, tuple or list of
tensors (a pytree, nested as deep as it likes) whose leaves share the leading example dimension.

Every place that slices examples, moves them or hands them to the model goes through here, so a
dict batch of Hugging Face's kind ({"input_ids", "attention_mask"}) trains, evaluates, checks and
checkpoints like one tensor of images. The model is called `model(**x)` for a dict and `model(x)`
otherwise; its output is a tensor, or a mapping or object whose `logits` the default loss and
metric read (Hugging Face's ModelOutput).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree

Tree = Any  # a tensor, or a dict / tuple / list of trees


def leaves(tree: Tree) -> list[torch.Tensor]:
    return pytree.tree_leaves(tree)


def structure(tree: Tree) -> Any:
    """The nesting and keys, without the tensors (equal for trees the model is called alike on)."""
    return pytree.tree_structure(tree)


def count(tree: Tree) -> int:
    """The number of examples: the leading dimension its leaves share."""
    return len(leaves(tree)[0])


def take(tree: Tree, index: torch.Tensor | slice) -> Tree:
    """The examples at `index` (a slice or a tensor of indices) of every leaf."""
    return pytree.tree_map(lambda t: t[index], tree)


def part(tree: Tree, rank: int, world: int) -> Tree:
    """This rank's contiguous share of the examples, as torch.tensor_split deals them."""
    return pytree.tree_map(lambda t: t.tensor_split(world)[rank], tree)


def move(tree: Tree, fn: Callable[[torch.Tensor], torch.Tensor]) -> Tree:
    return pytree.tree_map(fn, tree)


def nbytes(tree: Tree) -> int:
    return sum(t.element_size() * t.nelement() for t in leaves(tree))


def call(model: Callable, x: Tree) -> Any:
    """The model on a batch: `model(**x)` for a dict of inputs, `model(x)` for anything else."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def logits(outputs: Any) -> Any:
    """What the default loss and metric read: the tensor itself, or its `logits`."""
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    found = getattr(outputs, "logits", None)
    return found if isinstance(found, torch.Tensor) else outputs


def describe(tree: Tree) -> str:
    """A tree's structure and shapes in a few words, for messages."""
    if isinstance(tree, torch.Tensor):
        return f"shape {tuple(tree.shape)}"
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of (" + ", ".join(describe(v) for v in tree) + ")"
    return f"a {type(tree).__name__}"
