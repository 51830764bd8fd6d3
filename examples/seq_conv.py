"""A workload of your own: a small 1-D conv net that tells synthetic sequences apart, trained with a
label-smoothed loss. Nothing here comes from the harness; copy this file and seq_conv.yaml, then
change build, load and loss.

    harness run --config examples/seq_conv.yaml
"""

import torch
import torch.nn.functional as F
from torch import nn

MOTIF = 7  # samples in each class's pattern


def build(options: dict) -> nn.Module:
    """Two convolutions and a max over time: finds the motif wherever it lies."""
    channels = options["channels"]
    return nn.Sequential(
        nn.Conv1d(1, channels, kernel_size=5, padding=2), nn.ReLU(),
        nn.Conv1d(channels, channels, kernel_size=5, padding=2), nn.ReLU(),
        nn.AdaptiveMaxPool1d(1), nn.Flatten(),
        nn.Linear(channels, options["classes"]),
    )


def load(options: dict) -> dict:
    """Sequences of `length` samples of noise with one of `classes` motifs added at a random place;
    the label is which motif. The same options give the same data."""
    generator = torch.Generator().manual_seed(options.get("data_seed", 0))
    classes, length = options["classes"], options["length"]
    motifs = 3 * torch.randn(classes, MOTIF, generator=generator)

    def sequences(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(classes, (n,), generator=generator)
        x = torch.randn(n, length, generator=generator)
        where = torch.randint(0, length - MOTIF, (n, 1), generator=generator) + torch.arange(MOTIF)
        x.scatter_add_(1, where, motifs[labels])
        return x.unsqueeze(1), labels  # (examples, 1 channel, length)

    return {"train": sequences(options["train"]), "test": sequences(options["test"])}


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, label_smoothing=0.1)
