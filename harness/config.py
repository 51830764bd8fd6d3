"""Typed, frozen configuration: YAML + `--set key=value` overrides -> a validated SweepConfig.

Every setting that changes what a cell computes lives in CellSettings (workload, model, optim,
data, train); it is stored whole in each result.json and hashed into the cell id. Infrastructure
(where data and results live, how many processes) comes from the command line, not from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import batch_plan, builtins, yamlsafe
from harness.errors import ConfigError
from harness.field_errors import field_error
from harness.numbers import Count, Real
from harness.optim import OptimSettings
from harness.renamed import rename_old_keys
from harness.rules import CheckSettings, PredictSettings, ReportSettings
from harness.workload import WorkloadSettings
from harness.yamlsafe import apply_override, short

MNIST_TRAIN_IMAGES = 60_000
# Untimed steps at the start of every timed run: a cell (its default), predict's timing pass and
# each of bench's runs. The first steps pay for allocations, kernel selection and compilation.
WARMUP_STEPS = 5
# cuda_graphs runs this many eager steps on a side stream before it captures (harness/training/engine.py)
CUDA_GRAPH_EAGER_STEPS = 3
# Switching precision means a new Accelerator, and Accelerate keeps one per process.
UNSWEEPABLE = {"train.mixed_precision": "launch one run per precision instead"}


MAX_SEED = 2**32 - 1
MAX_BATCH, MAX_EPOCHS, MAX_EPOCH_EXAMPLES = 2**24, 10**6, 2**31 - 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSettings(_Frozen):
    activation: Literal["relu", "softplus"] = "relu"
    # normal: weights AND biases ~ N(0, init_std), as in the motivating case
    init: Literal["default", "normal", "kaiming"] = "default"
    init_std: Real = Field(1.0, gt=0)


class DataSettings(_Frozen):
    # the images of the built-in workloads; both have MNIST's format and sizes (60,000 training and
    # 10,000 test images of 28x28, 10 classes); workload fashion_mlp is Fashion-MNIST whatever this says
    dataset: Literal["mnist", "fashion_mnist"] = "mnist"
    # held out of the training examples (unless the workload's data comes with a "val" split)
    val_size: Count = Field(5000, ge=1)
    # which ones: the first (as TF's read_data_sets), the last, or a random set drawn with split_seed
    val_split: Literal["first", "last", "random"] = "first"
    split_seed: Count | None = Field(None, ge=0, le=MAX_SEED, description="data.val_split=random: its seed (default 0)")
    # train accuracy is measured on this fixed prefix of the training split after each epoch
    train_eval_size: Count = Field(10_000, ge=1)
    # device: every split held on the training device, each step gathers its batch there; loader: the
    # training split streamed by a DataLoader per process (docs/workloads.md), timed with the step
    input: Literal["device", "loader"] = "device"
    workers: Count = Field(0, ge=0, le=256, description="data.input=loader: DataLoader worker processes")

    @model_validator(mode="after")
    def _workers_need_the_loader(self) -> DataSettings:
        if self.workers and self.input == "device":
            raise ValueError(f"data.workers={self.workers} feeds a DataLoader; set data.input: loader or drop it")
        return self


class TrainSettings(_Frozen):
    batch_size: Count = Field(64, ge=1, le=MAX_BATCH, description="GLOBAL batch: each of P processes takes B/P")
    # per process: an optimizer step's B/P examples run as (B/P) / micro micro-batches whose gradients
    # accumulate (DDP syncs on the last); auto: the largest that fits on the device (harness capacity)
    micro_batch_size: Annotated[Count, Field(ge=1, le=MAX_BATCH)] | Literal["auto"] | None = Field(
        None, description="per process; default: B/P, no accumulation")
    epochs: Count = Field(5, ge=1, le=MAX_EPOCHS)
    # an epoch's order of example indices is drawn whole (8 bytes each): 2^31 of them are 16 GiB
    images_per_epoch: Count | None = Field(None, ge=1, le=MAX_EPOCH_EXAMPLES,
                                           description="default: the whole training split")
    sampling: Literal["shuffle", "with_replacement"] = "shuffle"
    seed: Count = Field(0, ge=0, le=MAX_SEED)
    # the cell's first steps, run outside the clock of time per example (allocations, kernel choice);
    # not a learning-rate warm-up (that is optim.lr_warmup_steps). Formerly train.warmup_steps (harness/renamed.py)
    untimed_steps: Count = Field(WARMUP_STEPS, ge=0, validation_alias=AliasChoices("untimed_steps", "warmup_steps"),
                                 description="first steps of the cell, excluded from timing")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    # eager | compile (torch.compile) | cuda_graphs (whole step captured once, replayed; CUDA only) |
    # auto: cuda_graphs on a CUDA device where the step can be captured, else eager; the cell records
    # which ran and why (training/engine.resolve_mode). A cell id counts auto as eager.
    mode: Literal["auto", "eager", "compile", "cuda_graphs"] = "auto"
    # intra-op CPU threads per process; default: the cores the process owns / processes per node
    # (training/threads.py), whichever way it was launched
    threads: Count | None = Field(None, ge=1, le=4096)
    # epoch-end diagnostics (training/diagnostics.py): full, light (no B_simple, the costly part), off
    diagnostics: Literal["full", "light", "off"] = "full"
    # the share of training time B_simple may cost (as checks.budget): measured at the first and last
    # epoch always, between them only while within it; null: every epoch
    diagnostics_budget: Real | None = Field(0.05, gt=0, le=10)
    step_diagnostics: bool = False  # norms at every step: costs time per image (results/diagnostics-overhead-cpu/)
    # [[at, batch], ...]: the global batch from each point on (harness/batch_plan.py), the first at 0, each
    # batch a larger integer multiple of the one before; the rate moves by optim.lr_scaling at each switch
    batch_schedule: list[tuple[Count, Annotated[Count, Field(ge=1, le=MAX_BATCH)]]] | None = Field(
        None, description="e.g. [[0, 32], [2000, 128]]; train.batch_size is its first batch")
    batch_schedule_unit: Literal["steps", "examples"] = "steps"

    @model_validator(mode="before")
    @classmethod
    def _batch_size_from_schedule(cls, raw: Any) -> Any:
        return batch_plan.with_first_batch(raw)

    @model_validator(mode="after")
    def _schedule_runs(self) -> TrainSettings:
        if found := batch_plan.refusal(self):
            raise ValueError(found)
        return self


class CellSettings(_Frozen):
    """Everything that determines what one training run computes."""

    workload: WorkloadSettings = WorkloadSettings()
    model: ModelSettings = ModelSettings()  # the built-in MLP's (and the motivating case's)
    optim: OptimSettings = OptimSettings()
    data: DataSettings = DataSettings()
    train: TrainSettings = TrainSettings()
    # examples in the training split, once the workload's data is loaded (`sized`); the built-in
    # image workloads know theirs from the settings
    _train_examples: int | None = PrivateAttr(default=None)

    def sized(self, train_examples: int) -> CellSettings:
        """These settings with the training split's size that the loaded data has."""
        sized = self.model_copy()
        sized._train_examples = train_examples
        return sized

    @property
    def dataset(self) -> str | None:
        """The image set of a built-in workload; None for the user's own data."""
        if self.workload.builtin is None:
            return None
        return builtins.REGISTRY[self.workload.builtin].dataset or self.data.dataset

    @property
    def size_known(self) -> bool:
        return self._train_examples is not None or self.dataset is not None

    @property
    def train_split_size(self) -> int:
        if self._train_examples is not None:
            return self._train_examples
        if self.dataset is None:
            raise ValueError("the training split's size is known once the workload's data is loaded (settings.sized)")
        return MNIST_TRAIN_IMAGES - self.data.val_size

    @property
    def images_per_epoch(self) -> int:
        return self.train.images_per_epoch or self.train_split_size

    def local_batch(self, processes: int) -> int:
        return self.train.batch_size // processes

    @property
    def batch_plan(self) -> batch_plan.BatchPlan:
        """The batch of every step and the steps of every epoch (train.batch_schedule, or fixed)."""
        return batch_plan.of(self.train, self.images_per_epoch)

    @property
    def steps_per_epoch(self) -> int:
        """A fixed batch's steps per epoch; with a schedule, the first epoch's (batch_plan has each)."""
        return self.images_per_epoch // self.train.batch_size

    @property
    def total_steps(self) -> int:
        """The cell's step budget: epochs x steps per epoch, or the schedule's steps over its epochs."""
        if self.train.batch_schedule is not None:
            return self.batch_plan.total_steps
        return self.train.epochs * self.steps_per_epoch

    def cuda_graphs_obstacle(self) -> str | None:
        """Why these settings cannot run as a captured step, known from the settings alone (the
        device and the process count are checked at launch, training/engine.resolve_mode); None when
        nothing here stands in the way."""
        if self.train.mixed_precision == "fp16":
            return ("train.mode=cuda_graphs cannot use fp16: its loss scaler reads the GPU every step; "
                    "use bf16 or no mixed precision")
        if self.train.step_diagnostics:
            return ("train.step_diagnostics needs train.mode=eager or compile (it is not captured in "
                    "the CUDA graph); set one of them to false/eager")
        if self.optim.name != "adam" or self.workload.optimizer:
            return "train.mode=cuda_graphs needs optim.name=adam (capturable fused Adam), not workload.optimizer"
        if self.workload.augment:
            return ("train.mode=cuda_graphs cannot capture workload.augment (its generator is seeded at every step); "
                    "use train.mode=eager or compile")
        if self.optim.varies_lr:
            return ("train.mode=cuda_graphs holds the learning rate fixed in the captured step; a schedule or a "
                    "warm-up (optim.schedule, optim.lr_warmup_*) needs train.mode=eager or compile")
        if self.data.input == "loader":
            return "train.mode=cuda_graphs replays one input buffer; data.input=loader needs eager or compile"
        if self.train.batch_schedule is not None:
            return "train.mode=cuda_graphs replays one batch shape; train.batch_schedule needs eager or compile"
        if self.train.untimed_steps <= CUDA_GRAPH_EAGER_STEPS:
            return (f"train.mode=cuda_graphs needs train.untimed_steps >= {CUDA_GRAPH_EAGER_STEPS + 1}, "
                    f"so that the graph capture happens outside the timed window")
        return None

    def check_fits(self) -> None:
        """What the training split's size allows (ValueError); checked when the size is known: from
        the settings for the built-in images, once loaded for the user's own data."""
        split = self.train_split_size
        if self.dataset is not None and self.data.val_size >= MNIST_TRAIN_IMAGES:
            raise ValueError(f"data.val_size={self.data.val_size} leaves no training images of the "
                             f"{MNIST_TRAIN_IMAGES:,}; use a smaller val_size")
        if self.train.batch_size > split:
            where = "= 60000 - data.val_size" if self._train_examples is None else "of the workload's data"
            raise ValueError(f"train.batch_size={self.train.batch_size} is larger than the training split ({split} "
                             f"examples {where}); use a smaller batch or val_size")
        if self.train.batch_size > self.images_per_epoch:
            raise ValueError(f"train.batch_size={self.train.batch_size} exceeds train.images_per_epoch="
                             f"{self.images_per_epoch}, so an epoch would have no step")
        if self.train.batch_schedule is not None and (largest := self.train.batch_schedule[-1][1]) > \
                self.images_per_epoch:
            raise ValueError(f"train.batch_schedule reaches batch {largest}, more than an epoch's "
                             f"{self.images_per_epoch} examples; end it lower or raise train.images_per_epoch")
        if self.data.train_eval_size > split:
            raise ValueError(f"data.train_eval_size must be at most the training split ({split})")

    @model_validator(mode="after")
    def _fits_training_split(self) -> CellSettings:
        if self.size_known:
            self.check_fits()
        if self.train.mode == "cuda_graphs" and (obstacle := self.cuda_graphs_obstacle()):
            raise ValueError(obstacle)
        if self.train.step_diagnostics and self.train.mixed_precision == "fp16":
            raise ValueError("train.step_diagnostics cannot use fp16 (its gradients carry the loss scale); "
                             "use bf16 or no mixed precision")
        return self


class SweepConfig(CellSettings):
    """A whole config file: base cell settings, the swept keys, report rules, trackers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    # dotted key -> list of values, e.g. {"train.batch_size": [8, 32]}; one cell per combination
    sweep: dict[str, list[Any]] = {}
    # name -> {dotted key: value}: one-switch-at-a-time variants of the base settings, each crossed
    # with the whole sweep (an ablation); the cell records its variant's name
    variants: dict[str, dict[str, Any]] = {}
    report: ReportSettings = ReportSettings()
    checks: CheckSettings = CheckSettings()
    predict: PredictSettings = PredictSettings()
    # Accelerate's trackers (accelerate.utils.LoggerType); whether one is installed is checked at launch
    log_with: list[Literal["all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive",
                           "swanlab"]] = []

    @field_validator("sweep")
    @classmethod
    def _sweep_keys_are_settings(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in sweep.items():
            if key in UNSWEEPABLE:
                raise ValueError(f"'{key}' cannot be swept: {UNSWEEPABLE[key]}")
            if not is_setting(key):
                raise ValueError(f"{key!r} is not a setting; valid keys: {', '.join(setting_keys())}")
            if not values:
                raise ValueError(f"'{key}' lists no values; give at least one, or remove it from the sweep")
        return sweep

    @model_validator(mode="after")
    def _target_on_the_metrics_scale(self) -> SweepConfig:
        metric = self.workload.quality
        target, tolerance = self.report.target_accuracy, self.report.tolerance
        if metric.bounded and not (0 < target <= 1 and tolerance < 1):
            raise ValueError(f"report.target={target} with tolerance {tolerance}: the metric ({metric.name}) is a "
                             f"score in [0, 1]; give a target in (0, 1] and a tolerance below 1, or name the metric "
                             f"(workload.metric_name) and its direction (workload.metric_mode: max | min)")
        return self

    @model_validator(mode="after")
    def _variants_are_settings(self) -> SweepConfig:
        for name, overrides in self.variants.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise ValueError(f"variants: name {name!r} must be letters, digits, '.', '_' or '-'")
            for key in overrides:
                if not is_setting(key):
                    raise ValueError(f"variants.{name}: {key!r} is not a setting; valid keys: "
                                     f"{', '.join(setting_keys())}")
                if key in self.sweep:
                    raise ValueError(f"variants.{name}: {key} is also swept; remove it from one of them")
        return self

    # the folder the workload's files are named relative to: the config file's (load_config)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def base_settings(self) -> CellSettings:
        return CellSettings(**{k: getattr(self, k) for k in CellSettings.model_fields})


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested settings tree as dotted keys (`train.batch_size`) to its leaf values; an empty
    section has no key."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def setting_keys() -> list[str]:
    return [
        f"{group}.{field}"
        for group, info in CellSettings.model_fields.items()
        for field in info.annotation.model_fields
    ]


OPTION = re.compile(r"workload\.options\.[A-Za-z_][A-Za-z0-9_]*")


def is_setting(key: str) -> bool:
    """A group.field of CellSettings, or one of the workload's options (workload.options.NAME)."""
    return key in setting_keys() or bool(OPTION.fullmatch(key))


def load_config(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read a YAML file, apply `key=value` overrides, validate; ConfigError names the bad field."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a FIFO blocks, a device reads without end or as nothing
            raise ConfigError(f"config file {path} is not a regular file ({yamlsafe.file_kind(path)}); pass "
                              f"--config with a YAML file")
        if path.stat().st_size > yamlsafe.MAX_BYTES:  # refused before it is read
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config may have at most "
                              f"{yamlsafe.MAX_BYTES:,} (1 MiB): it lists a sweep, not data")
        raw = yamlsafe.load(path.read_text(), str(path))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass --config with an existing YAML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied); fix its permissions") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable ({type(exc).__name__}: {short(exc)}); fix the file") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for override in overrides:
        apply_override(raw, override)
    rename_old_keys(raw, str(path))
    try:
        config = SweepConfig.model_validate(raw)
    except ValidationError as exc:  # blamed on the --set that gave the field, else on the file
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        keys = [o.partition("=")[0].strip() for o in overrides]
        given = next((k for k in reversed(keys) if k == loc or loc.startswith(f"{k}.") or k.startswith(f"{loc}.")),
                     None)
        raise ConfigError(f"{f'--set {given}' if given else path}: {describe(error)}") from None
    config._base_dir = path.resolve().parent
    return config


def describe(error: dict) -> str:
    """One line for pydantic's first error: the dotted field, what is wrong, how to fix it."""
    return field_error(error, SweepConfig)


def parse(model: type[BaseModel], raw: dict, source: str) -> Any:
    """`raw` as the typed `model`; ConfigError names the first bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc.errors()[0])}") from None
