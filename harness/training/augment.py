"""Augmentation of each training batch, inside the timed step and never in evaluation:
`workload.augment: FILE.py:fn`, the user's `fn(inputs, generator) -> inputs`, or the built-in
`crop_flip` (pad by 4 and crop back at a random offset, then flip left-right half the time, as the
CIFAR recipes do; batched on the device, as airbench does).

The generator lives on the step's device and is seeded from (cell seed, rank, step) before every
step, so a cell resumed from a checkpoint draws what the uninterrupted one drew, and each process
of a data-parallel cell draws its own. The epoch-end diagnostics (B_simple) read the un-augmented
training examples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.training.batches import Tree

CROP_FLIP_PAD = 4


def crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = CROP_FLIP_PAD) -> torch.Tensor:
    """(examples, channels, H, W) images, each padded by `pad` zeros on every side, cropped back to
    H x W at an offset drawn in [0, 2 pad] both ways, and mirrored left-right with probability 1/2."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"crop_flip takes one tensor of images, (examples, channels, height, width); got {shape}: "
                         f"write an augment of your own (workload.augment: FILE.py:fn)")
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=device, generator=generator)
    flip = torch.rand(n, 1, device=device, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=device)  # (n, h): which padded rows each example keeps
    cols = dx + torch.arange(w, device=device)
    cols = torch.where(flip, cols.flip(1), cols)  # a mirrored crop reads its columns right to left
    examples = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[examples, channels, rows[:, None, :, None], cols[:, None, None, :]]


def seed_for(seed: int, rank: int, step: int) -> int:
    """The generator's seed before `step` (0-based, over the whole cell): a distinct stream per
    (seed, rank, step), the same in every run of the cell."""
    return ((seed * 1_000_003 + step) * 4099 + rank) % (2**63 - 1)


class Augmenter:
    """Applies the augmentation to one step's inputs; `seek` puts it at a step of the cell (a
    resumed cell, a new epoch), after which every call is the next step."""

    def __init__(self, fn: Callable[[Tree, torch.Generator], Tree], seed: int, rank: int, device: torch.device,
                 call: Callable[..., Tree]):
        self.fn, self.seed, self.rank, self.call = fn, seed, rank, call
        self.generator = torch.Generator(device=device)
        self.position = 0

    def seek(self, step: int) -> None:
        self.position = step

    def __call__(self, inputs: Tree) -> Tree:
        self.generator.manual_seed(seed_for(self.seed, self.rank, self.position))
        self.position += 1
        return self.call("augment", self.fn, inputs, self.generator)
