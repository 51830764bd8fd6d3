"""The optimizer and its learning-rate schedule, as settings (`optim:` in a config) and as the pure
arithmetic of the rate at each step. The training side builds torch's optimizers from these
(training/engine.py); nothing here imports torch.

A schedule runs over the cell's step budget (train.epochs x steps per epoch): a warm-up from
1/lr_warmup steps of the peak rate to the peak (`lr_warmup_steps`, or `lr_warmup_fraction` of
the budget), then constant, or down to `lr_final_fraction` of the peak along a cosine or a line.
A step past the budget (predict's short runs may train longer) keeps the final rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.numbers import Count, Real


class OptimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Real = Field(1e-3, gt=0)
    eps: Real = Field(1e-8, gt=0)
    betas: tuple[Real, Real] = (0.9, 0.999)
    momentum: Real = Field(0.0, ge=0, lt=1)
    nesterov: bool = False  # sgd with momentum > 0
    weight_decay: Real = Field(0.0, ge=0)  # adamw: decoupled (Loshchilov & Hutter); adam, sgd: L2 in the gradient
    grad_clip_norm: Real | None = Field(None, gt=0)
    # lr is given at lr_reference_batch; other batch sizes scale it by B/ref or sqrt(B/ref)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: Count = Field(1, ge=1)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    lr_warmup_steps: Count = Field(0, ge=0)
    lr_warmup_fraction: Real = Field(0.0, ge=0, lt=1)
    lr_final_fraction: Real = Field(0.0, ge=0, le=1)

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("each beta must lie in [0, 1)")
        return betas

    @model_validator(mode="after")
    def _consistent(self) -> OptimSettings:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("optim.nesterov needs optim.name=sgd and optim.momentum > 0")
        if self.lr_warmup_steps and self.lr_warmup_fraction:
            raise ValueError("give optim.lr_warmup_steps or optim.lr_warmup_fraction, not both")
        if self.schedule == "constant" and self.lr_final_fraction:
            raise ValueError("optim.lr_final_fraction needs optim.schedule=cosine or linear")
        return self

    def lr_for(self, batch_size: int) -> float:
        ratio = batch_size / self.lr_reference_batch
        return {"none": self.lr, "linear": self.lr * ratio, "sqrt": self.lr * math.sqrt(ratio)}[self.lr_scaling]

    @property
    def varies_lr(self) -> bool:
        """Whether the rate changes from step to step (a warm-up or a decay)."""
        return self.schedule != "constant" or bool(self.lr_warmup_steps or self.lr_warmup_fraction)

    def describe_schedule(self, total_steps: int) -> str:
        """The rate over the cell in words, e.g. 'cosine to 0.1x, warm-up 50 steps' or 'constant'."""
        schedule = self.schedule_for(total_steps)
        final = f"{self.lr_final_fraction:g} of the peak" if self.lr_final_fraction else "zero"
        words = self.schedule if self.schedule == "constant" else f"{self.schedule} to {final}"
        steps = f"{schedule.warmup} step{'s' if schedule.warmup > 1 else ''}"
        return words + (f", warm-up {steps}" if schedule.warmup else "")

    def describe_switches(self, switches: tuple[tuple[int, int], ...]) -> str:
        """', x4 from step 2,000 (batch 128)': the rate at a batch schedule's switches (lr_scaling)."""
        return "".join(f", x{self.lr_for(b) / self.lr_for(switches[0][1]):g} from step {s:,} (batch {b})"
                       for s, b in switches[1:] if self.lr_scaling != "none")

    def schedule_for(self, total_steps: int, switches: tuple[tuple[int, int], ...] = ()) -> Schedule:
        """The rate over the cell; `switches`: a batch schedule's (step, batch), where the rate moves
        by lr_scaling from the first batch's."""
        warmup = self.lr_warmup_steps or math.ceil(self.lr_warmup_fraction * total_steps)
        factors = [[step, self.lr_for(batch) / self.lr_for(switches[0][1])] for step, batch in switches[1:]]
        return Schedule(self.schedule, min(warmup, total_steps), total_steps, self.lr_final_fraction,
                        [f for f in factors if f[1] != 1.0])


class Schedule:
    """The rate of step `step` (0-based) as a fraction of the peak: a callable torch's LambdaLR
    takes, whose plain attributes its state_dict saves."""

    def __init__(self, shape: str, warmup: int, total: int, final: float, factors: list[list[float]] = ()):
        self.shape, self.warmup, self.total, self.final = shape, warmup, total, final
        self.factors = [list(f) for f in factors]  # [step, x]: from that step on, x times the rate (batch switches)

    @property
    def moves(self) -> bool:
        """Whether the rate ever changes."""
        return bool(self.factors) or self.shape != "constant" or self.warmup > 0

    def __call__(self, step: int) -> float:
        factor = next((x for at, x in reversed(self.factors) if step >= at), 1.0)
        return factor * self._shape(step)

    def _shape(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.shape == "constant" or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        if self.shape == "cosine":
            return self.final + (1 - self.final) * (1 + math.cos(math.pi * progress)) / 2
        return 1 - (1 - self.final) * progress


@dataclass(frozen=True)
class Hyperparameters:
    """What `workload.optimizer`'s make(parameters, options, hyper) is told about the cell."""

    lr: float  # optim.lr after optim.lr_scaling at this batch size
    batch_size: int  # the global batch
    total_steps: int  # the cell's step budget, train.epochs x steps per epoch: what a schedule runs over
    steps_per_epoch: int
    seed: int
