"""Why did training go wrong? Numbers that test each explanation of a collapse, per epoch.

- numerical instability: gradient norms and the largest single-step update relative to the
  weights, per layer (StepNorms: every step, on the device, a switch because it costs time);
  Adam's smallest and median sqrt(v) per layer (tiny second moments make huge steps);
- dead or saturated units, and saturated softmax outputs: on a fixed probe of training images;
- gradient noise: B_simple of McCandlish et al. (2018), from per-sample gradient norms on a fixed
  probe of training images, i.e. the two batch sizes are B_small = 1 and B_big = the probe size. The probe is the
  same on any number of processes, so cells run with 1 or P processes compare.

Everything per epoch runs outside the timed window, like evaluation. Column names live in
record/metrics.py (DIAGNOSTIC_COLUMNS). Per-layer numbers cover the model's first four layers with
weights (nn.Linear and convolutions, in the order the model defines them: l1 = the MLP's 784->500
layer) and the activations of its first three nn.ReLU / nn.Softplus modules; a model without them
records them as unknown, which the report calls "not available for this model".
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.record.metrics import DIAGNOSTIC_COLUMNS, STEP_NORM_COLUMNS
from harness.training import batches
from harness.training.batches import Tree

PROBE_IMAGES = 1000  # dead units, logits, softmax
NOISE_IMAGES = 2048  # B_big for B_simple: |G|^2 is estimated within ~B_simple / NOISE_IMAGES
DEAD_SLOPE = 1e-2  # a unit is dead when its activation's slope is below this for every probe image


LAYERS, ACTIVATIONS = 4, 3  # the per-layer columns: l1..l4 for weights, l1..l3 for activations


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The model's first LAYERS layers with weights: nn.Linear and convolutions, in definition order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))][:LAYERS]


def layer_params(layer: nn.Module) -> list[nn.Parameter]:
    return [p for p in (layer.weight, layer.bias) if p is not None]


def _per_layer_keys(prefix: str, values: list[float | None], count: int) -> dict[str, float | None]:
    """l1..l<count>, unknown (None) for layers the model does not have."""
    return {f"{prefix}_l{i + 1}": values[i] if i < len(values) else None for i in range(count)}


class StepNorms:
    """Per layer: sum and max of the gradient norm over steps, and the max of |update| / |weights|.

    Accumulated in device tensors, so a step adds work but never a host sync. The gradient norm is
    taken before clipping (what clipping sees); the update is whatever the optimizer applied.
    """

    def __init__(self, model: nn.Module):
        layers = weighted_layers(model)
        self.params = [p for layer in layers for p in layer_params(layer)]
        device, n = self.params[0].device, len(layers)
        # which layer each parameter belongs to: a layer's norm is sqrt(|W|^2 + |b|^2)
        self.layer_of = torch.tensor([i for i, layer in enumerate(layers) for _ in layer_params(layer)], device=device)
        self.grad_sum = torch.zeros(n, device=device)
        self.grad_max = torch.zeros(n, device=device)
        self.update_max = torch.zeros(n, device=device)
        self.steps = 0
        self.before = [torch.empty_like(p) for p in self.params]

    def _per_layer(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        squares = torch.stack(torch._foreach_norm(tensors)).square()
        return torch.zeros_like(self.grad_sum).index_add_(0, self.layer_of, squares).sqrt()

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
        sums, maxes, updates = (t.tolist() if self.steps else [] for t in (self.grad_sum, self.grad_max,
                                                                           self.update_max))
        out = (_per_layer_keys("grad_norm_mean", [s / max(self.steps, 1) for s in sums], LAYERS)
               | _per_layer_keys("grad_norm_max", maxes, LAYERS) | _per_layer_keys("update_ratio_max", updates, LAYERS))
        for t in (self.grad_sum, self.grad_max, self.update_max):
            t.zero_()
        self.steps = 0
        return out


@torch.no_grad()
def probe_stats(model: nn.Module, x: Tree) -> dict[str, float | None]:
    """Dead fraction per activation module (a unit is dead when its slope is below DEAD_SLOPE for
    every probe example), the largest |logit|, the fraction of saturated softmaxes."""
    inputs: list[torch.Tensor] = []
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.Softplus))][:ACTIVATIONS]
    hooks = [m.register_forward_hook(lambda m, inp, out: inputs.append(inp[0])) for m in activations]
    try:
        h = batches.logits(batches.call(model, x))
    finally:
        for hook in hooks:
            hook.remove()
    dead = []
    for module, pre in zip(activations, inputs):
        slope = (pre > 0).float() if isinstance(module, nn.ReLU) else torch.sigmoid(pre * module.beta)
        dead.append((slope < DEAD_SLOPE).flatten(1).all(dim=0).float().mean().item())
    out = _per_layer_keys("dead_fraction", dead, ACTIVATIONS)
    if not (isinstance(h, torch.Tensor) and h.dim() in (2, 3) and h.is_floating_point()):  # not class logits
        return out | {"max_abs_logit": None, "softmax_saturated_fraction": None}
    h = h.flatten(0, -2)  # (examples, tokens, classes): one softmax per token
    probs = torch.softmax(h.float(), dim=1)
    out["max_abs_logit"] = h.abs().max().item()
    # saturated: the top class's float32 probability is exactly 1, so a correct image has no gradient
    out["softmax_saturated_fraction"] = (probs.max(dim=1).values == 1.0).float().mean().item()
    return out


def adam_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, float | None]:
    """Smallest and median sqrt(v_hat) per layer (bias-corrected, as the step divides by it)."""
    mins, medians = [], []
    for layer in weighted_layers(model):
        states = [optimizer.state.get(p, {}) for p in layer_params(layer)]
        if not all("exp_avg_sq" in s for s in states):  # SGD, or no step yet
            mins.append(None)
            medians.append(None)
            continue
        beta2 = optimizer.param_groups[0]["betas"][1]
        correction = 1 - beta2 ** float(states[0]["step"])
        root = (torch.cat([s["exp_avg_sq"].flatten() for s in states]) / correction).sqrt()
        mins.append(root.min().item())
        medians.append(root.median().item())
    return _per_layer_keys("adam_sqrt_v_min", mins, LAYERS) | _per_layer_keys("adam_sqrt_v_median", medians, LAYERS)


def b_simple(small_sq: float, big_sq: float, b_small: int, b_big: int) -> dict[str, float | None]:
    """McCandlish et al. (2018), appendix A: unbiased |G|^2 and tr(Sigma) from the squared norms of
    gradients averaged over b_small and b_big samples; B_simple = tr(Sigma) / |G|^2."""
    true_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    scale = trace / true_sq if true_sq > 0 and math.isfinite(trace / true_sq) else None  # noise swamps |G|
    return {"noise_scale": scale, "noise_trace": trace, "true_grad_sq": true_sq}


def noise_scale(model: nn.Module, x: Tree, y: Tree,
                summed_loss: Callable | None = None) -> dict[str, float | None]:
    """B_simple with B_small = 1 (the mean squared norm of per-sample gradients) and B_big = len(x)
    (the squared norm of their mean); `summed_loss(outputs, targets)` is the loss summed over the
    examples (default: cross-entropy). `.grad` is left untouched. Unknown (None) where the model
    cannot give per-sample gradients."""
    summed_loss = summed_loss or (lambda outputs, targets: F.cross_entropy(outputs, targets, reduction="sum"))
    found = _linear_squares(model, x, y, summed_loss)
    if found is None:
        try:
            with warnings.catch_warnings():  # torch.func's "no batching rule, falling back": slower, not wrong
                warnings.simplefilter("ignore", UserWarning)
                found = _per_sample_squares(model, x, y, summed_loss)
        except Exception:  # noqa: BLE001 - an op torch.func cannot batch, a model that needs a whole batch: not available
            return {"noise_scale": None, "noise_trace": None, "true_grad_sq": None}
    return b_simple(*found, 1, batches.count(x))


def _linear_squares(model: nn.Module, x: Tree, y: Tree,
                    summed_loss: Callable) -> tuple[float, float] | None:
    """Where every parameter sits in an nn.Linear applied to (examples, features): a sample's
    gradient is the outer product delta (x) a, so its squared norm is |delta|^2 (|a|^2 + 1 for the
    bias): one forward and one backward, no per-sample gradient is ever built. None elsewhere."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if {id(p) for m in layers for p in m.parameters()} != {id(p) for p in model.parameters()}:
        return None
    seen: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [layer.register_forward_hook(lambda m, inp, out: seen.__setitem__(m, (inp[0].detach(), out)))
             for layer in layers]
    try:
        loss = summed_loss(batches.call(model, x), y)  # per-sample losses, so delta is per sample
    finally:
        for hook in hooks:
            hook.remove()
    if len(seen) != len(layers) or any(a.dim() != 2 for a, _ in seen.values()):
        return None  # a layer used twice, or over a sequence: the outer product does not hold
    deltas = torch.autograd.grad(loss, [seen[layer][1] for layer in layers])
    n, small_sq, big_sq = batches.count(x), 0.0, 0.0
    for layer, delta in zip(layers, deltas):
        a, d = seen[layer][0].double(), delta.detach().double()
        has_bias = layer.bias is not None
        small_sq += (d.square().sum(1) * (a.square().sum(1) + has_bias)).sum().item() / n
        big_sq += (d.T @ a / n).square().sum().item() + (d.mean(0).square().sum().item() if has_bias else 0.0)
    return small_sq, big_sq


def _per_sample_squares(model: nn.Module, x: Tree, y: Tree,
                        summed_loss: Callable) -> tuple[float, float]:
    """Any other model: per-sample gradients with torch.func, a chunk of examples at a time. A
    model with batch normalisation runs as a copy in eval mode (its running statistics: a batch of
    one has none of its own, and the in-place update cannot be batched); dropout draws per example."""
    from torch.func import functional_call, grad, vmap

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model = copy.deepcopy(model).eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def one(p: dict, xi: Tree, yi: Tree) -> torch.Tensor:
        xs, ys = (batches.move(t, lambda leaf: leaf[None]) for t in (xi, yi))
        outputs = functional_call(model, (p, buffers), (), xs) if isinstance(xs, Mapping) \
            else functional_call(model, (p, buffers), (xs,))
        return summed_loss(outputs, ys)

    per_sample = vmap(grad(one), in_dims=(None, 0, 0), randomness="different")
    chunk = max(1, min(256, 2**26 // max(1, sum(v.numel() for v in params.values()))))
    n, small_sq = batches.count(x), 0.0
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        grads = per_sample(params, batches.take(x, part), batches.take(y, part))
        small_sq += sum(g.flatten(1).double().square().sum() for g in grads.values()).item()
        for k, g in grads.items():
            total[k] += g.double().sum(0)
    return small_sq / n, sum((g / n).square().sum() for g in total.values()).item()


def weights_finite(model: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def epoch_diagnostics(model: nn.Module, optimizer: torch.optim.Optimizer, train_x: Tree,
                      train_y: Tree, summed_loss: Callable | None = None,
                      b_simple: bool = True) -> dict[str, float | None]:
    """Everything measured on the weights at the end of an epoch (the model in train mode); B_simple
    only with `b_simple` (train.diagnostics: full)."""
    out = probe_stats(model, batches.take(train_x, slice(None, PROBE_IMAGES)))
    out |= adam_state(optimizer, model)
    probe = slice(None, NOISE_IMAGES)
    found = noise_scale(model, batches.take(train_x, probe), batches.take(train_y, probe), summed_loss) \
        if b_simple else {}
    out["noise_scale"] = found.get("noise_scale")
    return out


def first_nonfinite(accelerator, losses: torch.Tensor) -> int | None:
    """The first step of the epoch whose loss was not finite on any rank, or None."""
    bad = (~torch.isfinite(losses)).to(torch.float64)
    bad = accelerator.reduce(bad, "sum") if accelerator.num_processes > 1 else bad
    nonzero = torch.nonzero(bad).flatten()
    return int(nonzero[0]) if len(nonzero) else None


def diagnose(engine, splits, level: str = "full") -> dict[str, Any]:
    """The epoch's diagnostics at train.diagnostics' `level` (unknown where not measured);
    identical on every rank (same weights, same probe), no reduction."""
    found = dict.fromkeys(DIAGNOSTIC_COLUMNS) if level == "off" else epoch_diagnostics(
        engine.eval_model, engine.optimizer, splits.train_x, splits.train_y, engine.workload.summed_loss,
        b_simple=level == "full")
    return found | (engine.norms.read_and_reset() if engine.norms is not None else dict.fromkeys(STEP_NORM_COLUMNS))
