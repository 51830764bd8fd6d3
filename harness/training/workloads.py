"""The workload a cell trains, as callables: the built-ins written here, or the user's own imported
from the file or module the config names (harness/workload.py located it). The training side is
the only place that runs the user's code; every call to it is wrapped so that a mistake there is
one line naming the role and the last frame, with the whole traceback behind --debug.

The interface, for the user's own:
    build(options) -> torch.nn.Module
    load(options) -> {"train": (x, y), "test": (x, y)} and optionally "val": (x, y)
    loss(outputs, targets) -> a scalar tensor, the mean over the examples (default: cross-entropy
        on integer class labels)
    metric(outputs, targets) -> one score per example (default: accuracy, in [0, 1], higher is better)
    augment(inputs, generator) -> inputs, each training batch (training/augment.py; or crop_flip)
    make(parameters, options, hyper) -> an optimizer, or (optimizer, scheduler) stepped every step
        (training/engine.py; default: optim.name)
Inputs and targets may be pytrees (training/batches.py); the defaults read the outputs' `logits`
and take (examples, classes) logits against (examples,) labels, or (examples, T, classes) against
(examples, T) token labels: per example the mean over its tokens, labels of IGNORE_INDEX left out
(Hugging Face's padding convention).
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
from harness.quality import DEFAULT as DEFAULT_QUALITY
from harness.quality import LOSS, Quality
from harness.training import batches
from harness.training.augment import crop_flip
from harness.training.batches import Tree
from harness.workload import CROP_FLIP, IN_PROCESS, REGISTERED, split


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
    metric: Callable | None = None  # None: accuracy, argmax == label (or the loss, with metric_is_loss)
    metric_is_loss: bool = False  # workload.metric: loss, the per-example loss
    quality: Quality = DEFAULT_QUALITY  # the metric's name and direction
    specs: dict[str, str] = field(default_factory=dict)  # role -> where its code was found
    augment: Callable | None = None  # each training batch's inputs: augment(inputs, generator) -> inputs
    optimizer: Callable | None = None  # make(parameters, options, hyper); None: optim.name
    collate: Callable | None = None  # the DataLoader's collate_fn (data.input=loader); None: torch's default

    def call(self, role: str, fn: Callable, *args: Any) -> Any:
        """Run the user's code; any exception becomes one line naming the role and where it broke."""
        try:
            return fn(*args)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything: one line naming it
            where = self.specs.get(role) or DEFAULTS.get(role) or self.label
            raise failure(f"workload.{role}: {where}", exc) from None

    def train_loss(self, outputs: Any, targets: Tree) -> torch.Tensor:
        if self.loss is not None:
            return self.loss(outputs, targets)
        logits, targets = batches.logits(outputs), _labels(targets)
        return F.cross_entropy(logits, targets) if logits.dim() == 2 else token_losses(logits, targets).mean()

    def summed_loss(self, outputs: Any, targets: Tree) -> torch.Tensor:
        """The loss summed over the examples (per-example losses behind a mean: mean x count)."""
        if self.loss is not None:
            return self.loss(outputs, targets).float() * batches.count(targets)
        logits, targets = batches.logits(outputs).float(), _labels(targets)
        if logits.dim() == 2:
            return F.cross_entropy(logits, targets, reduction="sum")
        return token_losses(logits, targets).sum()

    def scores(self, outputs: Any, targets: Tree) -> torch.Tensor:
        """One score per example: the metric the target and the accuracies are read on."""
        if self.metric is not None:
            return self.metric(outputs, targets).to(torch.float64)
        if self.metric_is_loss:
            return self.example_losses(outputs, targets).to(torch.float64)
        logits, targets = batches.logits(outputs), _labels(targets)
        hits = (logits.argmax(dim=-1) == targets).to(torch.float64)
        return hits if logits.dim() == 2 else _token_mean(hits, targets)


    def example_losses(self, outputs: Any, targets: Tree) -> torch.Tensor:
        """Each example's loss: the default's own, or a loss of the user's (a mean over the batch)
        spread evenly, which sums to the same."""
        if self.loss is not None:
            return self.loss(outputs, targets).float().expand(batches.count(targets))
        logits, targets = batches.logits(outputs).float(), _labels(targets)
        if logits.dim() == 2:
            return F.cross_entropy(logits, targets, reduction="none")
        return token_losses(logits, targets)


IGNORE_INDEX = -100  # a token label the default loss and metric leave out


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example, the mean cross-entropy over its tokens: (examples, *T, classes) logits against
    (examples, *T) labels, IGNORE_INDEX left out."""
    flat = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none", ignore_index=IGNORE_INDEX)
    return _token_mean(flat.view(targets.shape), targets)


def _token_mean(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    kept = (targets != IGNORE_INDEX).flatten(1)
    return (values.flatten(1) * kept).sum(1) / kept.sum(1).clamp_min(1)


DEFAULTS = {"loss": "the default loss (cross-entropy)", "metric": "the default metric (accuracy)"}


def _labels(targets: torch.Tensor) -> torch.Tensor:
    """Class labels as cross-entropy takes them: int32, uint8 or bool labels as int64 (no copy for int64)."""
    return targets.long() if isinstance(targets, torch.Tensor) and not targets.is_floating_point() else targets


def failure(where: str, exc: BaseException) -> WorkloadError:
    frames = traceback.extract_tb(exc.__traceback__)
    last = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, SystemExit):  # exit 0 would read as success: said, never obeyed
        return WorkloadError(f"{where} called sys.exit({exc.code!r}){last}; a workload's function returns its "
                             f"answer or raises, it does not end the process", details)
    text = " ".join(str(exc).split())[:200]
    return WorkloadError(f"{where} raised {type(exc).__name__}: {text}{last}; --debug shows the whole traceback",
                         details)


_resolved: dict[str, Workload] = {}


def builtin(settings: CellSettings, cell: Cell | None = None) -> Workload:
    """A built-in workload (harness/builtins.py), on the built-in images; the user's loss, metric,
    augmentation or optimizer with it where the cell names them."""
    name = settings.workload.builtin
    build = load_callable(REGISTRY[name].builder, "model")
    return Workload(label=name, build=lambda _: build(settings), **_common(settings, cell))


def resolve(cell: Cell) -> Workload:
    """The cell's workload as callables, imported once per process."""
    settings = cell.settings
    if settings.workload.builtin is not None:
        return builtin(settings, cell)
    key = repr(sorted(_located(cell).items())) + repr(settings.workload.options) + repr(settings.workload.quality) \
        + repr(settings.workload.metric) + repr(settings.workload.augment)
    if key not in _resolved:
        located = _located(cell)
        _resolved[key] = Workload(label=located["model"], build=load_callable(located["model"], "model"),
                                  load=load_callable(located["data"], "data"), **_common(settings, cell))
    return _resolved[key]


def _common(settings: CellSettings, cell: Cell | None) -> dict[str, Any]:
    """A Workload's fields other than the model and the data."""
    own = {role: _optional(cell, role) if cell else None
           for role in ("loss", "metric", "augment", "optimizer", "collate")}
    if settings.workload.augment == CROP_FLIP:
        own["augment"] = crop_flip
    return own | {"options": dict(settings.workload.options), "metric_is_loss": settings.workload.metric == LOSS,
                  "quality": settings.workload.quality, "specs": _located(cell) if cell else {}}


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
                sys.path.append(folder)  # its neighbours, after every installed module (an html.py there stays its own)
            spec = importlib.util.spec_from_file_location(name, where)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        return sys.modules[name]
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - not there, or the user's file failing as it loads
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
    x, y = splits.train_prefix(TRY_EXAMPLES)
    if workload.augment is not None:
        _check_augment(workload, model, x, device)
    with torch.no_grad():
        outputs = workload.call("model", batches.call, model, x)
        if workload.loss is None:
            _check_classes(outputs, splits, workload)
        loss = workload.call("loss", workload.train_loss, outputs, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise WorkloadError(f"workload.loss: {workload.specs.get('loss')} returned {_got(loss)}; return one "
                                f"number, the mean over the examples (e.g. .mean())")
        _check_scores(workload, outputs, y)
        for split in ("val", "test"):  # inputs of another width would fail only after an epoch of training
            _check_split(workload, model, splits, split, batches.describe(x))
        return _loss_warnings(workload, outputs, y, loss)


def _check_split(workload: Workload, model: nn.Module, splits, split: str, train_inputs: str) -> None:
    """The model takes the split's inputs, and gives what it gives for the training ones."""
    x, y = splits.prefix(split, TRY_EXAMPLES)
    try:
        outputs = batches.call(model, x)
    except Exception as exc:  # noqa: BLE001 - the user's model on the user's data: one line
        said = " ".join(str(exc).split())[:160]
        raise WorkloadError(f"workload.data: the model fails on the {split} inputs ({batches.describe(x)}; the "
                            f"train inputs are {train_inputs}): {type(exc).__name__}: {said}; give every split "
                            f"inputs of one shape") from None
    _check_scores(workload, outputs, y)


def _check_augment(workload: Workload, model: nn.Module, x: Tree, device: torch.device) -> None:
    """The augmentation gives back inputs of the same structure and example count, which the model takes."""
    where = workload.specs.get("augment", "crop_flip")
    generator = torch.Generator(device=device).manual_seed(0)
    augmented = workload.call("augment", workload.augment, x, generator)
    if batches.structure(augmented) != batches.structure(x) or batches.count(augmented) != batches.count(x):
        raise WorkloadError(f"workload.augment: {where} returned {batches.describe(augmented)} for inputs of "
                            f"{batches.describe(x)}; return the inputs' structure with the same examples, augmented")
    with torch.no_grad():
        workload.call("model", batches.call, model, augmented)


def _class_logits(outputs: Any, targets: Tree) -> bool:
    """Whether the defaults apply: (examples, *T, classes) float logits against (examples, *T) labels."""
    logits = batches.logits(outputs)
    return (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor) and logits.is_floating_point()
            and logits.dim() == targets.dim() + 1 and logits.shape[:-1] == targets.shape)


def _got(value: Any) -> str:
    return batches.describe(batches.logits(value))


def _check_scores(workload: Workload, outputs: Any, y: Tree) -> None:
    """The metric, default or the user's, gives one finite score in [0, 1] per example."""
    n = batches.count(y)
    if workload.metric is None and not workload.metric_is_loss and not _class_logits(outputs, y):
        raise WorkloadError(f"workload.metric: the default metric (accuracy, argmax over classes == label) needs "
                            f"(examples, classes) logits against one label per example, or (examples, T, classes) "
                            f"against (examples, T) token labels; the model gives {_got(outputs)} for targets of "
                            f"{batches.describe(y)}: name a metric of your own as workload.metric")
    where = workload.specs.get("metric", "the default metric")
    scores = workload.call("metric", workload.scores, outputs, y)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
        raise WorkloadError(f"workload.metric: {where} returned {_got(scores)} for {n} examples; return one score "
                            f"per example, shape ({n},), higher is better")
    if not torch.isfinite(scores).all():
        raise WorkloadError(f"workload.metric: {where} gave a score that is not finite on the {n} trial "
                            f"examples ({scores.tolist()}); return a finite score per example")
    if workload.quality.bounded and (scores.min() < 0 or scores.max() > 1):
        raise WorkloadError(f"workload.metric: {where} gave scores from {scores.min():.4g} to {scores.max():.4g} on "
                            f"the {n} trial examples; an unnamed metric is read as an accuracy in [0, 1], higher "
                            f"is better: rescale it, or name it (workload.metric_name) and its direction "
                            f"(workload.metric_mode: max | min)")


def _loss_warnings(workload: Workload, outputs: Any, y: Tree, loss: torch.Tensor) -> list[str]:
    """A loss that does not move when the model's outputs do cannot train the model."""
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        return []
    moved = workload.call("loss", workload.train_loss, outputs * 1.5 + 0.25, y)
    if isinstance(moved, torch.Tensor) and moved.numel() == 1 and bool(moved == loss):
        where = workload.specs.get("loss", "the default loss (cross-entropy)")
        return [f"workload.loss: {where} gave exactly {float(loss):.6g} on the {batches.count(y)} trial examples "
                f"both for the model's outputs and for those outputs changed; a loss that does not depend on the "
                f"outputs trains nothing: check workload.loss against the targets' shape"]
    return []


def _check_classes(outputs: Any, splits, workload: Workload) -> None:
    """The default loss is cross-entropy over class logits: integer labels in 0..classes-1, or
    IGNORE_INDEX (left out)."""
    for name, y in (("train", splits.train_y), ("val", splits.val_y), ("test", splits.test_y)):
        if not isinstance(y, torch.Tensor) or y.is_floating_point():
            raise WorkloadError(f"workload.loss: the {name} targets are {_targets(y)}, but the default loss "
                                f"(cross-entropy) takes one tensor of integer class labels; name a loss of your own "
                                f"as workload.loss (e.g. mean squared error)")
    y = splits.train_prefix(TRY_EXAMPLES)[1]
    if not _class_logits(outputs, y):
        raise WorkloadError(f"workload.model: {workload.label} gives {_got(outputs)} for targets of "
                            f"{batches.describe(y)}; the default loss (cross-entropy) needs (examples, classes) "
                            f"logits against (examples,) labels, or (examples, T, classes) against (examples, T): "
                            f"name a loss of your own as workload.loss")
    classes = batches.logits(outputs).shape[-1]
    for name, y in (("train", splits.train_y), ("val", splits.val_y), ("test", splits.test_y)):
        labels = y[y != IGNORE_INDEX]
        low, high = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
        if low < 0 or high >= classes:
            raise WorkloadError(f"workload.data: the {name} labels run from {low} to {high}, but the model gives "
                                f"{classes} classes (0..{classes - 1}); fix the labels or the model's last layer")


def _targets(y: Tree) -> str:
    if isinstance(y, torch.Tensor):
        return f"floating point ({y.dtype}, shape {tuple(y.shape)})"
    return batches.describe(y)
