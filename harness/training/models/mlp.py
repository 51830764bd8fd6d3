"""Workloads mnist_mlp and fashion_mlp: the MLP of the motivating case (784-500-500-500-10) on
28x28 images stored flat, logits out (softmax lives in the loss); its settings are `model:`."""

from __future__ import annotations

from torch import nn

from harness.config import CellSettings, ModelSettings

LAYER_SIZES = (784, 500, 500, 500, 10)


def build(settings: CellSettings) -> nn.Sequential:
    return build_mlp(settings.model)


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
