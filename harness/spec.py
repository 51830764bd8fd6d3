"""A sweep built once: its config, where its results go and where its images are. The commands,
harness.sweep and harness.predict all start from one `SweepSpec`, from a config file or from
keyword arguments; its cells are the plan (harness/plan.py), the same ids either way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness import builtins, paths, plan, workload
from harness.config import SweepConfig, load_config, parse
from harness.renamed import rename_old_keys


@dataclass(frozen=True)
class SweepSpec:
    config: SweepConfig
    results_dir: Path = Path("results")
    data_dir: Path | None = None  # the images' folder; None: $HARNESS_DATA_DIR, else downloaded

    @classmethod
    def from_config(cls, path: str | Path, overrides: Sequence[str] = (), *, results_dir: str | Path = "results",
                    data_dir: str | Path | None = None) -> SweepSpec:
        """A config file with `--set`-style overrides ("train.epochs=3")."""
        config = load_config(paths.checked(path, "config"), list(overrides))
        return cls(config, paths.checked(results_dir, "results_dir"),
                   paths.checked(data_dir, "data_dir") if data_dir else None)

    @classmethod
    def from_keywords(cls, model: Callable | str, data: Callable | str | None = None, *, batch_sizes: Sequence[int],
                      seeds: Sequence[int] = (0,), target: float = 0.97, lr: float = 1e-3, epochs: int = 5,
                      loss: Callable | str | None = None, metric: Callable | str | None = None,
                      metric_name: str | None = None, metric_mode: str | None = None,
                      optimizer: Callable | str | None = None, schedule: str | None = None,
                      augment: Callable | str | None = None, unit: str | None = None, options: dict | None = None,
                      name: str = "sweep", results_dir: str | Path = "results",
                      data_dir: str | Path | None = None, settings: dict[str, Any] | None = None) -> SweepSpec:
        """A grid of batch sizes x seeds. `model` and `data` are callables or FILE.py:NAME strings, or
        `model` names a built-in workload ("mnist_conv") with `data` left out; `metric` may be "loss"
        (the built-in loss metric), named and directed by `metric_name` and `metric_mode` (max | min);
        `optimizer` is optim.name ("adamw") or your own make(parameters, options, hyper) (a callable
        or FILE.py:NAME: workload.optimizer); `schedule` is optim.schedule; `augment` a callable,
        FILE.py:NAME or "crop_flip"; `unit` workload.unit; `settings` holds any other config section
        ({"optim": {"lr_warmup_fraction": 0.05}, "train": {"mode": "compile"}})."""
        own_optimizer = optimizer is not None and not (isinstance(optimizer, str) and ":" not in optimizer)
        roles = {"model": model, "data": data, "loss": loss, "metric": metric, "augment": augment,
                 "optimizer": optimizer if own_optimizer else None}
        builtin = isinstance(model, str) and model in builtins.NAMES and data is None
        chosen: dict[str, Any] = {"name": model} if builtin else {}
        chosen |= {role: fn if isinstance(fn, str) else workload.register(fn) for role, fn in roles.items()
                   if fn is not None and not (builtin and role == "model")}
        chosen |= {k: v for k, v in (("metric_name", metric_name), ("metric_mode", metric_mode), ("unit", unit))
                   if v is not None}
        named = None if own_optimizer else optimizer
        optim = {"lr": lr} | {k: v for k, v in (("name", named), ("schedule", schedule)) if v is not None}
        raw: dict[str, Any] = {"name": name, "workload": chosen | ({"options": options} if options else {}),
                               "optim": optim, "train": {"epochs": epochs},
                               "report": {"target_accuracy": target},
                               "sweep": {"train.batch_size": list(batch_sizes), "train.seed": list(seeds)}}
        for section, values in (settings or {}).items():
            raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
        rename_old_keys(raw, "harness.sweep")
        config = parse(SweepConfig, raw, source="harness.sweep")
        return cls(config, paths.checked(results_dir, "results_dir"),
                   paths.checked(data_dir, "data_dir") if data_dir else None)

    @cached_property
    def cells(self) -> list[plan.Cell]:
        return plan.expand(self.config)

    @property
    def sweep_dir(self) -> Path:
        return self.results_dir / self.config.name
