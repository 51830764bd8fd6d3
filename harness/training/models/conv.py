"""Workload mnist_conv: two 5x5 convolutions (`channels`, then twice as many) with ReLU and 2x2
max-pooling, then a hidden layer of `hidden` units: a model that is not an MLP, on the same 28x28
images stored flat. Its options come with their defaults merged in (harness/builtins.py)."""

from __future__ import annotations

from torch import nn

from harness.config import CellSettings


def build(settings: CellSettings) -> nn.Sequential:
    return build_conv(settings.workload.options)


def build_conv(options: dict[str, int]) -> nn.Sequential:
    channels, hidden = options["channels"], options["hidden"]
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 7 * 7, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )
