"""The MLP of the motivating case: 784-500-500-500-10, logits out (softmax lives in the loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelSettings

LAYER_SIZES = (784, 500, 500, 500, 10)


def build_mlp(settings: ModelSettings) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(LAYER_SIZES, LAYER_SIZES[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(LAYER_SIZES) - 2:
            layers.append(nn.ReLU() if settings.activation == "relu" else nn.Softplus())
    model = nn.Sequential(*layers)
    for layer in model:
        if isinstance(layer, nn.Linear):
            _initialise(layer, settings)
    return model


def _initialise(layer: nn.Linear, settings: ModelSettings) -> None:
    if settings.init == "normal":
        # the motivating case's tf.random_normal: std 1 for weights and biases alike
        nn.init.normal_(layer.weight, std=settings.init_std)
        nn.init.normal_(layer.bias, std=settings.init_std)
    elif settings.init == "kaiming":
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    # "default": PyTorch's own Linear init, already applied


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 10_000) -> torch.Tensor:
    """[correct predictions, summed cross-entropy] as a float64 device tensor, so the caller
    decides when to sync (and can sum it over ranks in one reduction)."""
    total = torch.zeros(2, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        logits = model(x[start : start + chunk])
        labels = y[start : start + chunk]
        total[0] += (logits.argmax(dim=1) == labels).sum()
        total[1] += F.cross_entropy(logits.float(), labels, reduction="sum")
    return total
