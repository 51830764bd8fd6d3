"""A regression: predict a smooth function of 16 inputs with a small MLP, trained on mean squared
error, judged on validation MSE (lower is better). Nothing here comes from the harness; copy this
file and regression.yaml, then change build, load, loss and mse.

    harness run --config examples/regression.yaml
"""

import torch
import torch.nn.functional as F
from torch import nn


def build(options: dict) -> nn.Module:
    width = options["width"]
    return nn.Sequential(nn.Linear(options["features"], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 1))


def load(options: dict) -> dict:
    """y = sin(x . w1) + 0.5 (x . w2)^2 / features + noise, with fixed random directions w1, w2."""
    generator = torch.Generator().manual_seed(options.get("data_seed", 0))
    features = options["features"]
    w1, w2 = torch.randn(2, features, generator=generator) / features**0.5

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, features, generator=generator)
        y = torch.sin(3 * x @ w1) + 0.5 * (x @ w2) ** 2 + options["noise"] * torch.randn(n, generator=generator)
        return x, y.unsqueeze(1)

    return {"train": split(options["train"]), "val": split(options["val"]), "test": split(options["test"])}


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs, targets)


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One score per example: its squared error (the report reads the mean, lower is better)."""
    return (outputs - targets).square().mean(1)
