"""The training step, built once per cell in its execution mode: eager, compile or cuda_graphs.

A step takes the device tensor of this rank's sample indices and returns the loss as a device
tensor: it gathers the batch from the on-device dataset, and never reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from harness.config import CUDA_GRAPH_EAGER_STEPS, CellSettings
from harness.errors import ConfigError
from harness.training.data import Splits
from harness.training.diagnostics import StepNorms
from harness.training.workloads import Workload, build_model

Step = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Engine:
    accelerator: Accelerator  # where the step runs (device, processes): steps.run_steps syncs and reduces with it
    model: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped with several processes)
    eval_model: torch.nn.Module  # the plain module, for evaluation outside DDP
    optimizer: torch.optim.Optimizer
    step: Step
    workload: Workload  # the model's builder, the data's loss and metric
    norms: StepNorms | None = None  # per-step gradient and update norms, when switched on


def build_optimizer(settings: CellSettings, params, capturable: bool = False) -> torch.optim.Optimizer:
    o = settings.optim
    lr = o.lr_for(settings.train.batch_size)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    # fused Adam: one kernel for all parameters, on CUDA and (torch >= 2.4) CPU;
    # capturable keeps its step count on the device so a CUDA graph can replay it
    return torch.optim.Adam(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                            fused=True, capturable=capturable)


def check_launch(settings: CellSettings, accelerator: Accelerator) -> None:
    """What a mode needs from this launch (the settings alone are checked by the config)."""
    if settings.train.mode != "cuda_graphs":
        return
    if accelerator.device.type != "cuda":
        raise ConfigError(f"train.mode=cuda_graphs needs a CUDA device, this run is on {accelerator.device.type}; "
                          f"use train.mode=eager or compile")
    if accelerator.num_processes > 1:
        raise ConfigError("train.mode=cuda_graphs runs in one process (DDP's all-reduce is not captured here); "
                          "launch one process or use eager/compile")


def build_engine(settings: CellSettings, accelerator: Accelerator, splits: Splits, workload: Workload) -> Engine:
    mode = settings.train.mode
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(settings.train.seed)
    model = build_model(workload).to(accelerator.device)
    optimizer = build_optimizer(settings, model.parameters(), capturable=mode == "cuda_graphs")
    model, optimizer = accelerator.prepare(model, optimizer)
    forward = torch.compile(model) if mode == "compile" else model
    clip = settings.optim.grad_clip_norm
    norms = StepNorms(accelerator.unwrap_model(model)) if settings.train.step_diagnostics else None

    def step(idx: torch.Tensor) -> torch.Tensor:
        loss = workload.train_loss(forward(splits.train_x[idx]), splits.train_y[idx])
        accelerator.backward(loss)  # Accelerate's: DDP gradient sync, mixed-precision scaling
        if norms is not None:
            norms.after_backward()  # the synced gradient, before clipping
        if clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if norms is not None:
            norms.after_step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if mode == "cuda_graphs":
        step = CudaGraphStep(step, settings.train.batch_size, accelerator.device)
    return Engine(accelerator=accelerator, model=model, eval_model=accelerator.unwrap_model(model), optimizer=optimizer,
                  step=step, workload=workload, norms=norms)


class CudaGraphStep:
    """Forward, backward and optimizer step captured once as one CUDA graph, then replayed.

    The first CUDA_GRAPH_EAGER_STEPS calls run eagerly on a side stream (as torch.cuda.graphs requires before a
    capture); they are real training steps. The next call captures, then replays it; every later
    call only copies the indices into the static input and replays.
    """

    def __init__(self, step: Step, local_batch: int, device: torch.device):
        self.step = step
        self.static_idx = torch.zeros(local_batch, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_loss: torch.Tensor | None = None
        self.eager_calls = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
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
                raise ConfigError(f"train.mode=cuda_graphs: this model's step cannot be captured as a CUDA graph "
                                  f"({' '.join(str(exc).split())[:160]}); use train.mode=eager or compile") from None
        self.graph.replay()
        return self.static_loss

    def replay_only(self) -> None:
        """The floor: one replay with nothing around it (for `harness bench`)."""
        self.graph.replay()
