"""Why did training go wrong? Numbers that test each explanation of a collapse, per epoch.

- numerical instability: gradient norms and the largest single-step update relative to the
  weights, per layer (StepNorms: every step, on the device, a switch because it costs time);
  Adam's smallest and median sqrt(v) per layer (tiny second moments make huge steps);
- dead or saturated units, and saturated softmax outputs: on a fixed probe of training images;
- gradient noise: B_simple of McCandlish et al. (2018), from per-sample gradient norms on a fixed
  probe of training images, i.e. the two batch sizes are B_small = 1 and B_big = the probe size. The probe is the
  same on any number of processes, so cells run with 1 or P processes compare.

Everything per epoch runs outside the timed window, like evaluation. Column names live in
metrics.DIAGNOSTIC_COLUMNS; layers are numbered from 1 (l1 = the 784->500 layer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PROBE_IMAGES = 1000  # dead units, logits, softmax
NOISE_IMAGES = 2048  # B_big for B_simple: |G|^2 is estimated within ~B_simple / NOISE_IMAGES
DEAD_SLOPE = 1e-2  # a unit is dead when its activation's slope is below this for every probe image


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


class StepNorms:
    """Per layer: sum and max of the gradient norm over steps, and the max of |update| / |weights|.

    Accumulated in device tensors, so a step adds work but never a host sync. The gradient norm is
    taken before clipping (what clipping sees); the update is whatever the optimizer applied.
    """

    def __init__(self, model: nn.Module):
        self.params = [p for layer in linear_layers(model) for p in (layer.weight, layer.bias)]
        device, n = self.params[0].device, len(self.params) // 2
        self.grad_sum = torch.zeros(n, device=device)
        self.grad_max = torch.zeros(n, device=device)
        self.update_max = torch.zeros(n, device=device)
        self.steps = 0
        self.before = [torch.empty_like(p) for p in self.params]

    def _per_layer(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        # weight and bias of a layer together: sqrt(|W|^2 + |b|^2)
        return torch.stack(torch._foreach_norm(tensors)).view(-1, 2).square().sum(dim=1).sqrt()

    def after_backward(self) -> None:
        norms = self._per_layer([p.grad for p in self.params])
        self.grad_sum += norms
        torch.maximum(self.grad_max, norms, out=self.grad_max)
        torch._foreach_copy_(self.before, [p.detach() for p in self.params])

    def after_step(self) -> None:
        with torch.no_grad():
            weights = self._per_layer(self.before)
            updates = self._per_layer(torch._foreach_sub([p.detach() for p in self.params], self.before))
            torch.maximum(self.update_max, updates / weights.clamp_min(1e-30), out=self.update_max)
        self.steps += 1

    def state(self) -> dict[str, Any]:
        return {"grad_sum": self.grad_sum.cpu(), "grad_max": self.grad_max.cpu(),
                "update_max": self.update_max.cpu(), "steps": self.steps}

    def restore(self, state: dict[str, Any]) -> None:
        for key in ("grad_sum", "grad_max", "update_max"):
            getattr(self, key).copy_(state[key])
        self.steps = state["steps"]

    def read_and_reset(self) -> dict[str, float | None]:
        """This epoch's numbers (one host read), then zeros for the next epoch."""
        sums, maxes, updates = (t.tolist() for t in (self.grad_sum, self.grad_max, self.update_max))
        out = {}
        for i in range(len(sums)):
            out[f"grad_norm_mean_l{i + 1}"] = sums[i] / self.steps if self.steps else None
            out[f"grad_norm_max_l{i + 1}"] = maxes[i] if self.steps else None
            out[f"update_ratio_max_l{i + 1}"] = updates[i] if self.steps else None
        for t in (self.grad_sum, self.grad_max, self.update_max):
            t.zero_()
        self.steps = 0
        return out


@torch.no_grad()
def probe_stats(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Dead fraction per hidden layer, the largest |logit|, the fraction of saturated softmaxes."""
    out, h, pre, hidden = {}, x, None, 0
    for layer in model.children():
        h = layer(h)
        if isinstance(layer, nn.Linear):
            pre = h
            continue
        slope = (pre > 0).float() if isinstance(layer, nn.ReLU) else torch.sigmoid(pre)  # softplus' slope
        hidden += 1
        out[f"dead_fraction_l{hidden}"] = (slope < DEAD_SLOPE).all(dim=0).float().mean().item()
    probs = torch.softmax(h.float(), dim=1)
    out["max_abs_logit"] = h.abs().max().item()
    # saturated: the top class's float32 probability is exactly 1, so a correct image has no gradient
    out["softmax_saturated_fraction"] = (probs.max(dim=1).values == 1.0).float().mean().item()
    return out


def adam_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float | None]:
    """Smallest and median sqrt(v_hat) per layer (bias-corrected, as the step divides by it)."""
    out = {}
    for i, layer in enumerate(linear_layers(model), start=1):
        states = [optimizer.state.get(p, {}) for p in (layer.weight, layer.bias)]
        if not all("exp_avg_sq" in s for s in states):  # SGD, or no step yet
            out[f"adam_sqrt_v_min_l{i}"] = out[f"adam_sqrt_v_median_l{i}"] = None
            continue
        beta2 = optimizer.param_groups[0]["betas"][1]
        correction = 1 - beta2 ** float(states[0]["step"])
        root = (torch.cat([s["exp_avg_sq"].flatten() for s in states]) / correction).sqrt()
        out[f"adam_sqrt_v_min_l{i}"] = root.min().item()
        out[f"adam_sqrt_v_median_l{i}"] = root.median().item()
    return out


def b_simple(small_sq: float, big_sq: float, b_small: int, b_big: int) -> dict[str, float | None]:
    """McCandlish et al. (2018), appendix A: unbiased |G|^2 and tr(Sigma) from the squared norms of
    gradients averaged over b_small and b_big samples; B_simple = tr(Sigma) / |G|^2."""
    true_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    scale = trace / true_sq if true_sq > 0 and math.isfinite(trace / true_sq) else None  # noise swamps |G|
    return {"noise_scale": scale, "noise_trace": trace, "true_grad_sq": true_sq}


def noise_scale(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=F.cross_entropy) -> dict[str, float | None]:
    """B_simple with B_small = 1 (the mean squared norm of per-sample gradients) and B_big = len(x)
    (the squared norm of their mean). For a linear layer a sample's gradient is the outer product
    delta (x) a, so its squared norm is |delta|^2 (|a|^2 + 1 for the bias): one forward and one
    backward, no per-sample gradient is ever built. `.grad` is left untouched."""
    layers = linear_layers(model)
    seen: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [layer.register_forward_hook(lambda m, inp, out: seen.__setitem__(m, (inp[0].detach(), out)))
             for layer in layers]
    try:
        loss = loss_fn(model(x), y, reduction="sum")  # per-sample losses, so delta is per sample
    finally:
        for hook in hooks:
            hook.remove()
    deltas = torch.autograd.grad(loss, [seen[layer][1] for layer in layers])
    n, small_sq, big_sq = len(x), 0.0, 0.0
    for layer, delta in zip(layers, deltas):
        a, d = seen[layer][0].double(), delta.detach().double()
        has_bias = layer.bias is not None
        small_sq += (d.square().sum(1) * (a.square().sum(1) + has_bias)).sum().item() / n
        big_sq += (d.T @ a / n).square().sum().item() + (d.mean(0).square().sum().item() if has_bias else 0.0)
    return b_simple(small_sq, big_sq, 1, n)


def weights_finite(model: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def epoch_diagnostics(model: nn.Module, optimizer: torch.optim.Optimizer, train_x: torch.Tensor,
                      train_y: torch.Tensor) -> dict[str, float | None]:
    """Everything measured on the weights at the end of an epoch (the model in train mode)."""
    out = probe_stats(model, train_x[:PROBE_IMAGES])
    out |= adam_state(optimizer, model)
    scale = noise_scale(model, train_x[:NOISE_IMAGES], train_y[:NOISE_IMAGES])
    out["noise_scale"] = scale["noise_scale"]
    return out
