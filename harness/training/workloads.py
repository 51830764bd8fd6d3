"""The workload a cell trains, as callables: the built-ins written here, or the user's own imported
from the file or module the config names (harness/workload.py located it). The training side is
the only place that runs the user's code; every call to it is wrapped so that a mistake there is
one line naming the role and the last frame, with the whole traceback behind --debug.

The interface, for the user's own:
    build(options) -> torch.nn.Module
    load(options) -> {"train": (x, y), "test": (x, y)} and optionally "val": (x, y)
    loss(outputs, targets) -> a scalar tensor, the mean over the examples (default: cross-entropy
        on integer class labels)
    metric(outputs, targets) -> one score in [0, 1] per example, higher is better (default: accuracy)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.builtins import REGISTRY
from harness.config import CellSettings
from harness.errors import ConfigError
from harness.plan import Cell
from harness.workload import IN_PROCESS, REGISTERED, split


class WorkloadError(ConfigError):
    """The user's workload code failed or answered the wrong thing: one line, the traceback kept."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Workload:
    label: str  # how messages name it: a built-in's name, or the model's spec
    build: Callable[[dict], nn.Module]
    options: dict[str, Any] = field(default_factory=dict)
    load: Callable[[dict], Any] | None = None  # None: the built-in images (training/data.py)
    loss: Callable | None = None  # None: cross-entropy
    metric: Callable | None = None  # None: accuracy, argmax == label
    specs: dict[str, str] = field(default_factory=dict)  # role -> where its code was found

    def call(self, role: str, fn: Callable, *args: Any) -> Any:
        """Run the user's code; any exception becomes one line naming the role and where it broke."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything: one line naming it
            raise failure(f"workload.{role}: {self.specs.get(role, self.label)}", exc) from None

    def train_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets) if self.loss is None else self.loss(outputs, targets)

    def summed_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss summed over the examples (per-example losses behind a mean: mean x count)."""
        if self.loss is None:
            return F.cross_entropy(outputs.float(), targets, reduction="sum")
        return self.loss(outputs, targets).float() * len(targets)

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One score per example: the metric the target and the accuracies are read on."""
        if self.metric is None:
            return (outputs.argmax(dim=1) == targets).to(torch.float64)
        return self.metric(outputs, targets).to(torch.float64)


def failure(where: str, exc: BaseException) -> WorkloadError:
    frames = traceback.extract_tb(exc.__traceback__)
    last = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    text = " ".join(str(exc).split())[:200]
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return WorkloadError(f"{where} raised {type(exc).__name__}: {text}{last}; --debug shows the whole traceback",
                         details)


_resolved: dict[str, Workload] = {}


def builtin(settings: CellSettings, loss: Callable | None = None, metric: Callable | None = None,
            specs: dict[str, str] | None = None) -> Workload:
    """A built-in workload (harness/builtins.py), on the built-in images."""
    name = settings.workload.builtin
    build = load_callable(REGISTRY[name].builder, "model")
    return Workload(label=name, build=lambda _: build(settings), options=dict(settings.workload.options), loss=loss,
                    metric=metric,
                    specs=specs or {})


def resolve(cell: Cell) -> Workload:
    """The cell's workload as callables, imported once per process."""
    settings = cell.settings
    if settings.workload.builtin is not None:
        return builtin(settings, _optional(cell, "loss"), _optional(cell, "metric"), _located(cell))
    key = repr(sorted(_located(cell).items())) + repr(settings.workload.options)
    if key not in _resolved:
        located = _located(cell)
        _resolved[key] = Workload(label=located["model"], build=load_callable(located["model"], "model"),
                                  options=dict(settings.workload.options), load=load_callable(located["data"], "data"),
                                  loss=_optional(cell, "loss"), metric=_optional(cell, "metric"), specs=located)
    return _resolved[key]


def _located(cell: Cell) -> dict[str, str]:
    return {role: found["located"] for role, found in (cell.workload or {}).items() if isinstance(found, dict)
            and "located" in found}


def _optional(cell: Cell, role: str) -> Callable | None:
    located = _located(cell).get(role)
    return load_callable(located, role) if located else None


def load_callable(located: str, role: str) -> Callable:
    """The callable a located spec names: from this process (harness.sweep), a file or a module."""
    if located.startswith(IN_PROCESS):
        if located not in REGISTERED:
            raise ConfigError(f"workload.{role}: {located} was handed to harness.sweep in another Python process; "
                              f"define it in a file and name it as FILE.py:NAME")
        return REGISTERED[located]
    where, name = split(located)
    module = _import(where, role)
    found: Any = module
    for part in name.split("."):
        found = getattr(found, part, None)
        if found is None:
            defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise ConfigError(f"workload.{role}: {where} has no {name!r}; it defines "
                              f"{', '.join(defined[:12]) or 'none'}"
                              f"; name one as {Path(where).name}:NAME")
    if not callable(found):
        raise ConfigError(f"workload.{role}: {name} in {where} is a {type(found).__name__}, not a function or class")
    return found


def _import(where: str, role: str):
    try:
        if not where.endswith(".py"):
            return importlib.import_module(where)
        name = "harness_workload_" + hashlib.sha256(where.encode()).hexdigest()[:12]
        if name not in sys.modules:
            folder = str(Path(where).parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)  # the user's file may import its neighbours
            spec = importlib.util.spec_from_file_location(name, where)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        return sys.modules[name]
    except Exception as exc:  # noqa: BLE001 - a module that is not there, or the user's file failing as it loads
        raise failure(f"workload.{role}: importing {where}", exc) from None


TRY_EXAMPLES = 4


def build_model(workload: Workload) -> nn.Module:
    model = workload.call("model", workload.build, dict(workload.options))
    if not isinstance(model, nn.Module):
        raise WorkloadError(f"workload.model: {workload.specs.get('model', workload.label)} returned a "
                            f"{type(model).__name__}, not a torch.nn.Module; return the model itself")
    return model


def try_on(workload: Workload, splits, device: torch.device) -> list[str]:
    """Build the model and run it, the loss and the metric (the defaults too) on a few training
    examples with their real shapes, before any cell trains: what the user's code answers wrong is
    one line here, not a failed cell later. Returns warnings: what may train but looks wrong."""
    model = build_model(workload).to(device)
    x, y = splits.train_x[:TRY_EXAMPLES], splits.train_y[:TRY_EXAMPLES]
    with torch.no_grad():
        outputs = workload.call("model", model, x)
        if workload.loss is None:
            _check_classes(outputs, splits, workload)
        loss = workload.call("loss", workload.train_loss, outputs, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else f"a {type(loss).__name__}"
            raise WorkloadError(f"workload.loss: {workload.specs.get('loss')} returned {got}; return one number, "
                                f"the mean over the examples (e.g. .mean())")
        _check_scores(workload, outputs, y)
        return _loss_warnings(workload, outputs, y, loss)


def _check_scores(workload: Workload, outputs: Any, y: torch.Tensor) -> None:
    """The metric, default or the user's, gives one finite score in [0, 1] per example."""
    if workload.metric is None and not (isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and y.dim() == 1):
        got = f"shape {tuple(outputs.shape)}" if isinstance(outputs, torch.Tensor) else f"a {type(outputs).__name__}"
        raise WorkloadError(f"workload.metric: the default metric (accuracy, argmax over classes == label) needs "
                            f"(examples, classes) outputs and one label per example; the model gives {got} for "
                            f"targets of shape {tuple(y.shape)}: name a metric of your own as workload.metric")
    where = workload.specs.get("metric", "the default metric")
    scores = workload.call("metric", workload.metric or workload.scores, outputs, y)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(y),):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, torch.Tensor) else f"a {type(scores).__name__}"
        raise WorkloadError(f"workload.metric: {where} returned {got} for {len(y)} examples; return one score per "
                            f"example, shape ({len(y)},), higher is better")
    if not torch.isfinite(scores).all():
        raise WorkloadError(f"workload.metric: {where} gave a score that is not finite on the {len(y)} trial "
                            f"examples ({scores.tolist()}); return a finite score per example")
    if scores.min() < 0 or scores.max() > 1:
        raise WorkloadError(f"workload.metric: {where} gave scores from {scores.min():.4g} to {scores.max():.4g} on "
                            f"the {len(y)} trial examples; the target and the report read a score in [0, 1], higher "
                            f"is better (an accuracy): rescale it to [0, 1]")


def _loss_warnings(workload: Workload, outputs: Any, y: torch.Tensor, loss: torch.Tensor) -> list[str]:
    """A loss that does not move when the model's outputs do cannot train the model."""
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        return []
    moved = workload.call("loss", workload.train_loss, outputs * 1.5 + 0.25, y)
    if isinstance(moved, torch.Tensor) and moved.numel() == 1 and bool(moved == loss):
        where = workload.specs.get("loss", "the default loss (cross-entropy)")
        return [f"workload.loss: {where} gave exactly {float(loss):.6g} on the {len(y)} trial examples both for the "
                f"model's outputs and for those outputs changed; a loss that does not depend on the outputs "
                f"trains nothing: check workload.loss against the targets' shape"]
    return []


def _check_classes(outputs: Any, splits, workload: Workload) -> None:
    """The default loss is cross-entropy over class logits: integer labels in 0..classes-1."""
    if not (isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and outputs.is_floating_point()):
        got = f"shape {tuple(outputs.shape)}" if isinstance(outputs, torch.Tensor) else f"a {type(outputs).__name__}"
        raise WorkloadError(f"workload.model: {workload.label} gives {got}; the default loss (cross-entropy) needs "
                            f"(examples, classes) logits: name a loss of your own as workload.loss")
    classes = outputs.shape[1]
    for name, y in (("train", splits.train_y), ("val", splits.val_y), ("test", splits.test_y)):
        if y.is_floating_point():
            raise WorkloadError(f"workload.loss: the {name} targets are floating point ({y.dtype}, shape "
                                f"{tuple(y.shape)}), but the default loss (cross-entropy) takes integer class "
                                f"labels; name a loss of your own as workload.loss (e.g. mean squared error)")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise WorkloadError(f"workload.data: the {name} labels run from {low} to {high}, but the model gives "
                                f"{classes} classes (0..{classes - 1}); fix the labels or the model's last layer")
