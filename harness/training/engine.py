"""The training step, built once per cell in its execution mode: eager, compile or cuda_graphs
(`auto`: cuda_graphs where it applies, else eager).

A step takes this rank's batch and returns the loss as a device tensor, never reading a value back
to the host: on the device path the batch is its sample indices, gathered from the on-device
dataset; on the loader path (training/streamed.py) the (inputs, targets) already on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from harness.config import CUDA_GRAPH_EAGER_STEPS, CellSettings
from harness.errors import ConfigError
from harness.optim import Hyperparameters
from harness.training import batches
from harness.training.augment import Augmenter
from harness.training.data import Splits
from harness.training.diagnostics import StepNorms
from harness.training.threads import apply as apply_threads
from harness.training.workloads import Workload, WorkloadError, build_model

Batch = Any  # a step's input: this rank's sample indices (device path), or the loader's (inputs, targets)
Step = Callable[[Batch], torch.Tensor]


@dataclass
class Engine:
    accelerator: Accelerator  # where the step runs (device, processes): steps.run_steps syncs and reduces with it
    model: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped with several processes)
    eval_model: torch.nn.Module  # the plain module, for evaluation outside DDP
    optimizer: torch.optim.Optimizer
    step: Step
    workload: Workload  # the model's builder, the data's loss and metric
    norms: StepNorms | None = None  # per-step gradient and update norms, when switched on
    mode: str = "eager"  # what runs: eager, compile or cuda_graphs (train.mode auto resolved)
    mode_reason: str | None = None  # why auto did not run cuda_graphs
    path: str = "lean"  # the eager step's path: lean (torch's own calls) or accelerate (Accelerate's wrappers)
    graph: CudaGraphStep | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # optim.schedule or the user's; None: constant
    augmenter: Augmenter | None = None  # workload.augment, applied to each training batch
    schedule_ran: str = "constant"  # the learning-rate schedule, in words (optim.describe_schedule, or the user's)
    micro_batch: int = 0  # examples per forward and backward on this process (B/P without accumulation)
    accumulation: int = 1  # micro-batches per optimizer step

    def learning_rate(self) -> float:
        """The rate the next step will use."""
        return float(self.optimizer.param_groups[0]["lr"])

    def seek(self, step: int) -> None:
        """The next step is step `step` of the cell (0-based): the augmentation draws by it."""
        if self.augmenter is not None:
            self.augmenter.seek(step)

    def optimizer_record(self) -> dict[str, str]:
        """What a cell's summary records of the optimizer and schedule that ran."""
        raw = getattr(self.optimizer, "optimizer", self.optimizer)
        return {"optimizer_ran": type(raw).__name__, "schedule_ran": self.schedule_ran}

    def mode_record(self) -> dict[str, str | None]:
        """The fields a cell's summary records about its engine: a graph that fell back ran eager."""
        refused = self.graph.refused if self.graph is not None else None
        return {"engine_mode": "eager" if refused else self.mode, "engine_mode_reason": refused or self.mode_reason,
                "step_path": self.path, "micro_batch_size": self.micro_batch, "accumulation_steps": self.accumulation}


def hyperparameters(settings: CellSettings) -> Hyperparameters:
    return Hyperparameters(lr=settings.optim.lr_for(settings.train.batch_size), batch_size=settings.train.batch_size,
                           total_steps=settings.total_steps, steps_per_epoch=settings.steps_per_epoch,
                           seed=settings.train.seed)


def own_optimizer(settings: CellSettings, workload: Workload, params) -> tuple[torch.optim.Optimizer, object | None]:
    """workload.optimizer's make(parameters, options, hyper): an optimizer, or (optimizer, scheduler);
    a scheduler of its own and optim.schedule together would both move the rate: refused."""
    where = f"workload.optimizer: {workload.specs.get('optimizer', 'make')}"
    made = workload.call("optimizer", workload.optimizer, list(params), dict(workload.options),
                         hyperparameters(settings))
    optimizer, scheduler = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise WorkloadError(f"{where} returned {type(made).__name__}; return a torch.optim.Optimizer over the "
                            f"parameters it was given, or (optimizer, scheduler)")
    if scheduler is not None and not all(hasattr(scheduler, a) for a in ("step", "state_dict", "load_state_dict")):
        raise WorkloadError(f"{where}: its scheduler is a {type(scheduler).__name__}, without step/state_dict; "
                            f"return a torch.optim.lr_scheduler one (it is stepped after every optimizer step)")
    if scheduler is not None and settings.optim.varies_lr:
        raise ConfigError(f"{where} returned a scheduler, and optim.schedule / optim.lr_warmup_* set one too; "
                          f"keep one of them")
    if scheduler is not None and settings.train.batch_schedule and settings.optim.lr_scaling != "none":
        raise ConfigError(f"{where} returned a scheduler; train.batch_schedule moves the rate by optim.lr_scaling "
                          f"at each switch through the harness's own: return the optimizer alone, or lr_scaling none")
    return optimizer, scheduler


def build_optimizer(settings: CellSettings, params, capturable: bool = False) -> torch.optim.Optimizer:
    o = settings.optim
    lr = o.lr_for(settings.train.batch_size)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=True,
                                 capturable=capturable)
    # fused Adam: one kernel for all parameters, on CUDA and (torch >= 2.4) CPU;
    # capturable keeps its step count on the device so a CUDA graph can replay it
    return torch.optim.Adam(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                            fused=True, capturable=capturable)


def check_launch(settings: CellSettings, accelerator: Accelerator) -> None:
    """What an explicit mode needs from this launch (the settings alone are checked by the config)."""
    if settings.train.mode != "cuda_graphs":
        return
    obstacle = _launch_obstacle(accelerator)
    if obstacle:
        raise ConfigError(f"train.mode=cuda_graphs {obstacle}; use train.mode=eager, compile or auto")


def _launch_obstacle(accelerator: Accelerator) -> str | None:
    if accelerator.device.type != "cuda":
        return f"needs a CUDA device, this run is on {accelerator.device.type}"
    if accelerator.num_processes > 1:
        return "runs in one process (DDP's all-reduce is not captured here)"
    return None


def resolve_mode(settings: CellSettings, accelerator: Accelerator) -> tuple[str, str | None]:
    """(mode, why not cuda_graphs): `auto` is cuda_graphs where it applies, else eager."""
    if settings.train.mode != "auto":
        return settings.train.mode, None
    obstacle = _launch_obstacle(accelerator) or settings.cuda_graphs_obstacle()
    return ("eager", f"auto: cuda_graphs {obstacle}") if obstacle else ("cuda_graphs", None)


def lean_path_applies(accelerator: Accelerator) -> bool:
    """Accelerate's backward and optimizer wrappers are needed for DDP's gradient sync, fp16's loss
    scaler and gradient accumulation; without them they only cost host time (at batch 1 on a CPU
    more than the model: an uncached find_spec in AcceleratedOptimizer.step, inspect.signature in
    zero_grad, a division of the loss by 1)."""
    return (accelerator.num_processes == 1 and accelerator.scaler is None
            and accelerator.gradient_accumulation_steps == 1)


def build_engine(settings: CellSettings, accelerator: Accelerator, splits: Splits, workload: Workload,
                 lean: bool = True, micro_batch: int | None = None) -> Engine:
    """`lean=False` keeps Accelerate's wrappers even where they are not needed (bench's
    eager_accelerate, the step as it was). `micro_batch` (per process, dividing B/P; default B/P):
    the step accumulates B/P / micro_batch micro-batches' gradients, one optimizer step."""
    micro_batch = micro_batch or settings.local_batch(accelerator.num_processes)
    apply_threads(settings.train.threads)
    mode, reason = resolve_mode(settings, accelerator)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(settings.train.seed)
    model = build_model(workload).to(accelerator.device)
    optimizer, own_scheduler = own_optimizer(settings, workload, model.parameters()) if workload.optimizer else \
        (build_optimizer(settings, model.parameters(), capturable=mode == "cuda_graphs"), None)
    model, optimizer = accelerator.prepare(model, optimizer)
    forward = torch.compile(model) if mode == "compile" else model
    clip = settings.optim.grad_clip_norm
    norms = StepNorms(accelerator.unwrap_model(model)) if settings.train.step_diagnostics else None
    lean = lean and lean_path_applies(accelerator)
    # the lean path calls torch's own backward, clipping and optimizer: the same arithmetic
    backward = (lambda loss: loss.backward()) if lean else accelerator.backward
    clip_norm = torch.nn.utils.clip_grad_norm_ if lean else accelerator.clip_grad_norm_
    raw = optimizer.optimizer if lean else optimizer  # under AcceleratedOptimizer: torch's fused Adam
    fused = FusedAdamUpdate(raw) if lean and FusedAdamUpdate.applies(raw) else None
    switches = settings.batch_plan.switches
    schedule = settings.optim.schedule_for(settings.total_steps, switches)
    schedule = schedule if schedule.moves else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, schedule) if schedule else own_scheduler
    update = _then(fused or raw.step, scheduler.step) if scheduler else (fused or raw.step)
    clear_grads = fused.clear_grads if fused else lambda: raw.zero_grad(set_to_none=True)
    augmenter = Augmenter(workload.augment, settings.train.seed, accelerator.process_index, accelerator.device,
                          workload.call) if workload.augment else None

    accumulation = settings.local_batch(accelerator.num_processes) // micro_batch
    micro_steps = _micro_steps(accumulation, micro_batch)

    select = splits.select  # (inputs, targets) of the batch, or of a micro-batch's slice of it

    def step(batch: Batch) -> torch.Tensor:
        if accumulation == 1:
            inputs, targets = select(batch, None)
            outputs = batches.call(forward, augmenter(inputs) if augmenter else inputs)
            loss = workload.train_loss(outputs, targets)
            backward(loss)  # Accelerate's path: DDP gradient sync, mixed-precision scaling
        else:  # the whole batch's augmentation draws once, as without accumulation
            augmented = augmenter(select(batch, None)[0]) if augmenter else None
            losses = []
            for part, synced in micro_steps:
                x, y = select(batch, part)
                x = batches.take(augmented, part) if augmenter else x
                with contextlib.nullcontext() if synced else accelerator.no_sync(model):
                    micro_loss = workload.train_loss(batches.call(forward, x), y)
                    backward(micro_loss / accumulation)  # the mean over the batch, as one step takes it
                losses.append(micro_loss.detach())
            loss = torch.stack(losses).mean()
        if norms is not None:
            norms.after_backward()  # the synced gradient, before clipping
        if clip is not None:
            clip_norm(model.parameters(), clip)
        update()
        if norms is not None:
            norms.after_step()
        clear_grads()
        return loss.detach()

    graph = CudaGraphStep(step, settings.local_batch(accelerator.num_processes), accelerator.device,
                          settings.train.mode == "auto") if mode == "cuda_graphs" else None
    return Engine(accelerator=accelerator, model=model, eval_model=accelerator.unwrap_model(model), optimizer=optimizer,
                  step=graph or step, workload=workload, norms=norms, mode=mode, mode_reason=reason,
                  path="lean" if lean else "accelerate", graph=graph, scheduler=scheduler, augmenter=augmenter,
                  schedule_ran=f"{type(own_scheduler).__name__} (workload.optimizer)" if own_scheduler else
                  settings.optim.describe_schedule(settings.total_steps) + settings.optim.describe_switches(switches),
                  micro_batch=micro_batch,
                  accumulation=accumulation)


def _micro_steps(accumulation: int, micro_batch: int) -> list[tuple[slice, bool]]:
    """Each micro-batch's slice of the local batch, and whether its backward syncs the gradients:
    only the last one's (DDP's no_sync on the others; one process has nothing to sync)."""
    return [(slice(k * micro_batch, (k + 1) * micro_batch), k == accumulation - 1) for k in range(accumulation)]


def _then(first: Callable[[], object], second: Callable[[], object]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()
    return both


class FusedAdamUpdate:
    """torch.optim.Adam(fused=True).step without Optimizer.step's Python around it (hooks, profiler
    record, grad-mode and dynamo checks: ~50 us a step on a CPU, a tenth of the whole step at batch
    1): the same `_fused_adam_` kernel on the optimizer's own state, so the numbers and a
    checkpoint's state_dict are Adam's. Its first call is Adam's own step, which creates that state."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.params: list[torch.Tensor] = list(optimizer.param_groups[0]["params"])
        self.lists: tuple[list[torch.Tensor], ...] | None = None

    @staticmethod
    def applies(optimizer: torch.optim.Optimizer) -> bool:
        groups = optimizer.param_groups
        return (type(optimizer) is torch.optim.Adam and len(groups) == 1 and groups[0]["fused"]
                and not any(groups[0][k] for k in ("capturable", "amsgrad", "maximize", "differentiable",
                                                   "decoupled_weight_decay"))
                and len({(p.device, p.dtype) for p in groups[0]["params"]}) == 1 and hasattr(torch, "_fused_adam_"))

    def __call__(self) -> None:
        grads = [p.grad for p in self.params]
        if self.lists is None or any(g is None for g in grads):
            self.optimizer.step()  # creates the state; also any step where a parameter got no gradient
            states = [self.optimizer.state.get(p, {}) for p in self.params]
            if all("step" in s for s in states):
                self.lists = tuple([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))
            return
        exp_avgs, exp_avg_sqs, steps = self.lists
        g = self.optimizer.param_groups[0]  # read each step: load_state_dict replaces the group, a scheduler moves it
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(self.params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=g["lr"],
                           beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"], eps=g["eps"],
                           maximize=False, grad_scale=None, found_inf=None)

    def clear_grads(self) -> None:
        """zero_grad(set_to_none=True) without its profiler record around it."""
        for param in self.params:
            param.grad = None


class CudaGraphStep:
    """Forward, backward and optimizer step captured once as one CUDA graph, then replayed.

    The first CUDA_GRAPH_EAGER_STEPS calls run eagerly on a side stream (as torch.cuda.graphs requires before a
    capture); they are real training steps. The next call captures, then replays it; every later
    call only copies the indices into the static input and replays.
    """

    def __init__(self, step: Step, local_batch: int, device: torch.device, fall_back: bool = False):
        self.step = step
        self.fall_back = fall_back  # under train.mode=auto: a step that cannot be captured runs eager
        self.refused: str | None = None  # why it was not captured, once it fell back
        self.static_idx = torch.zeros(local_batch, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_loss: torch.Tensor | None = None
        self.eager_calls = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.refused is not None:
            return self.step(idx)
        self.static_idx.copy_(idx)
        if self.graph is None and self.eager_calls < CUDA_GRAPH_EAGER_STEPS:
            self.eager_calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(self.static_idx)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):  # records, runs nothing: the replay below trains
                    self.static_loss = self.step(self.static_idx)
            except RuntimeError as exc:  # an op that syncs or changes shape: this model cannot be captured
                why = " ".join(str(exc).split())[:160]
                if self.fall_back:
                    self.graph, self.refused = None, f"auto: capture failed ({why})"
                    return self.step(idx)
                raise ConfigError(f"train.mode=cuda_graphs: this model's step cannot be captured as a CUDA graph "
                                  f"({why}); use train.mode=eager or compile") from None
        self.graph.replay()
        return self.static_loss

    def replay_only(self) -> None:
        """The floor: one replay with nothing around it (for `harness bench`)."""
        self.graph.replay()
