"""The built-in models: the MLP of the motivating case (784-500-500-500-10) and a small conv net,
both on 28x28 images stored flat, logits out (softmax lives in the loss)."""

from __future__ import annotations

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


def build_conv(options: dict[str, int]) -> nn.Sequential:
    """Workload mnist_conv: two 5x5 convolutions (`channels`, then twice as many) with ReLU and 2x2
    max-pooling, then a hidden layer of `hidden` units: a model that is not an MLP, on the same data."""
    channels, hidden = options.get("channels", 16), options.get("hidden", 128)
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 7 * 7, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )
