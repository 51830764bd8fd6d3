"""What a cell trains: a built-in workload by name, or the user's own model, data, loss and metric,
each named FILE.py:NAME (the file relative to the config) or MODULE:NAME.

Settings and identity only. Nothing here imports the user's code (training/workloads.py does), so
planning a sweep, reading its results and reporting work without it. A workload's identity, which
the cell id covers, is each callable's name and a hash of the source it lives in, plus the
options: editing the model file gives new cells instead of reusing old ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from harness import builtins, code_identity, quality
from harness.errors import ConfigError

ROLES = ("model", "data", "loss", "metric", "augment", "optimizer", "collate")
CROP_FLIP = "crop_flip"  # the built-in augmentation (training/augment.py)
IN_PROCESS = "<python-"  # a callable handed over in this Python process (harness.sweep), not from a file
# FILE.py:NAME with the file's path as it is (a folder may have spaces, or a colon: the name ends
# at the last one), or MODULE:NAME
SPEC = re.compile(r"(?P<where>\S(?:.*\S)?):(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
# callables handed to harness.sweep / harness.predict that live in no importable file: spec -> callable
REGISTERED: dict[str, Callable] = {}


def _a_spec(value: str) -> str:
    if not SPEC.fullmatch(value):
        spaced = " (no space around the ':')" if re.search(r"\s:|:\s", value) else ""
        raise ValueError(f"expected FILE.py:NAME or MODULE:NAME, e.g. my_models.py:build{spaced} "
                         f"(got {value[:60]!r})")
    return value


def _json_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options are stored in every result.json and hashed into the cell id: plain finite data only."""
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"options must be plain data (numbers, strings, lists, mappings): {exc}") from None
    return options


Spec = Annotated[str, AfterValidator(_a_spec)]


def _a_metric(value: str) -> str:
    return value if value == quality.LOSS else _a_spec(value)


def _an_augment(value: str) -> str:
    return value if value == CROP_FLIP else _a_spec(value)


BUILT_IN = {"metric": quality.LOSS, "augment": CROP_FLIP}  # a role's built-in, named in place of FILE.py:NAME


class WorkloadSettings(BaseModel):
    """`workload: mnist_conv`, or `workload: {model: FILE.py:build, data: FILE.py:load, ...}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Literal[builtins.NAMES] | None = None
    model: Spec | None = None  # build(options) -> torch.nn.Module
    data: Spec | None = None  # load(options) -> {"train": (x, y), "test": (x, y)[, "val": (x, y)]}
    loss: Spec | None = None  # loss(outputs, targets) -> scalar; default cross-entropy
    # metric(outputs, targets) -> one score per example; default accuracy; `loss`: the per-example loss
    metric: Annotated[str, AfterValidator(_a_metric)] | None = None
    # augment(inputs, generator) -> inputs, each training batch inside the timed step; or crop_flip
    augment: Annotated[str, AfterValidator(_an_augment)] | None = None
    # make(parameters, options, hyper) -> optimizer or (optimizer, scheduler); default: optim.name
    optimizer: Spec | None = None
    # collate(examples) -> (inputs, targets): the DataLoader's collate_fn (data.input=loader); default torch's
    collate: Spec | None = None
    metric_name: Annotated[str, Field(min_length=1, max_length=60)] | None = None  # how the report names it
    metric_mode: Literal["max", "min"] | None = None  # higher or lower is better; default max (loss: min)
    # what one example is called in the report (image, sequence, token...); default: image for a
    # built-in, example for one's own (harness/quality.py unit_of)
    unit: Annotated[str, Field(pattern=r"^[a-z][a-z -]{0,23}$")] | None = None
    # tokens in one example (a sequence's length): the report adds a tokens/s column; reading only
    tokens_per_example: int | None = Field(None, ge=1, le=10**9, strict=True)
    options: Annotated[dict[str, Any], AfterValidator(_json_options)] = {}

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        """`workload: NAME` is a built-in by name; a built-in's option defaults are merged in, so
        the options every cell records and hashes are the ones it ran."""
        value = {"name": value} if isinstance(value, str) else value
        if isinstance(value, dict) and not value.get("model") and value.get("name", builtins.DEFAULT) in builtins.NAMES:
            given = value.get("options") or {}
            defaults = builtins.REGISTRY[value.get("name", builtins.DEFAULT)].defaults
            value = value | {"options": defaults | given if isinstance(given, dict) else given}
        return value

    @model_validator(mode="after")
    def _built_in_or_own(self) -> WorkloadSettings:
        if self.name is not None and (self.model or self.data):
            raise ValueError(f"give a built-in name ({self.name}) or model and data of your own, not both")
        if (self.model is None) != (self.data is None):
            raise ValueError("model and data go together: name both, or neither for a built-in workload")
        if self.metric == quality.LOSS and self.metric_mode == "max":
            raise ValueError("metric: loss is lower-is-better; leave metric_mode out or set it to min")
        if self.builtin is not None:
            takes = builtins.REGISTRY[self.builtin].defaults
            unknown = sorted(set(self.options) - set(takes))
            if unknown:
                raise ValueError(f"the built-in {self.builtin} takes {', '.join(takes) or 'no options'}; not "
                                 f"{', '.join(unknown)}")
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in self.options.values()):
                raise ValueError(f"the options of {self.builtin} are whole numbers >= 1")
        return self

    @property
    def builtin(self) -> str | None:
        """The built-in workload's name, or None for the user's own."""
        return None if self.model else self.name or builtins.DEFAULT

    def specs(self) -> dict[str, str]:
        """Each role's FILE.py:NAME or MODULE:NAME (not a built-in: the metric `loss`, crop_flip)."""
        return {role: getattr(self, role) for role in ROLES
                if getattr(self, role) is not None and getattr(self, role) != BUILT_IN.get(role)}

    @property
    def quality(self) -> quality.Quality:
        return quality.Quality.of_workload(self)

    def quality_identity(self) -> dict[str, str]:
        """What a cell id covers of the metric beyond its code: the built-in loss metric, a name and
        a direction where given (nothing for accuracy, so the ids planned before them hold)."""
        given = {"metric": self.metric} if self.metric == quality.LOSS else {}
        return given | {k: getattr(self, k) for k in ("metric_name", "metric_mode") if getattr(self, k)}


def _augment_module() -> str:
    return f"{Path(__file__).parent / 'training' / 'augment.py'}:{CROP_FLIP}"


def split(spec: str) -> tuple[str, str]:
    match = SPEC.fullmatch(spec)
    return match["where"], match["name"]


def locate(spec: str, base_dir: Path, role: str) -> str:
    """The spec with its file made absolute (a module or an in-process callable as it is), so that
    any process, array task or node loads the same code; ConfigError when the file is not there."""
    where, name = split(spec)
    if spec.startswith(IN_PROCESS):
        if spec not in REGISTERED:
            raise ConfigError(f"workload.{role}: {spec} names a callable handed to harness.sweep in another Python "
                              f"process; define it in a file and name it as FILE.py:{name}")
        return spec
    if not where.endswith(".py"):
        return spec  # a dotted module: Python's import path finds it
    path = (base_dir / where).resolve()
    if not path.is_file():
        raise ConfigError(f"workload.{role}: {where} does not exist (looked for {path}); give the file relative to "
                          f"the config file, or MODULE:NAME for an importable module")
    return f"{path}:{name}"


def source_sha256(located: str, role: str) -> str:
    """A hash of the source a callable lives in: the file with the neighbours it imports, the
    module's file, or, for an in-process callable, its code, captured values and helpers
    (harness/code_identity.py)."""
    where, name = split(located)
    try:
        if located.startswith(IN_PROCESS):
            fn = REGISTERED[located]
            source = code_identity.callable_identity(fn, _own_source(fn)).encode()
        elif where.endswith(".py"):
            return code_identity.file_sha256(Path(where))  # with the neighbours it imports
        else:
            found = importlib.util.find_spec(where)
            if found is not None and found.origin in ("frozen", "built-in"):  # part of this interpreter
                return hashlib.sha256(f"{where} of Python {sys.version}".encode()).hexdigest()[:16]
            if found is None or not found.origin or not Path(found.origin).is_file():
                raise ConfigError(f"workload.{role}: no module {where!r} on the import path; install it, or give "
                                  f"FILE.py:{name} relative to the config file")
            source = Path(found.origin).read_bytes()
    except (OSError, ImportError, ValueError) as exc:
        raise ConfigError(f"workload.{role}: cannot read the source of {located} ({type(exc).__name__}: {exc}); "
                          f"check the file or module") from None
    return hashlib.sha256(source).hexdigest()[:16]


def _own_source(fn: Callable) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # no source kept (defined in an interactive prompt): its code object
        code = getattr(fn, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code else repr(fn)


def identity(workload: WorkloadSettings, base_dir: Path) -> dict[str, Any] | None:
    """What a cell id covers of the workload, and where its code was found; None for a built-in
    MLP whose code is the one the committed results ran (harness/builtins.py): its settings are
    `model:`, its images data.dataset, both in the id already."""
    out: dict[str, Any] = {}
    if workload.builtin is not None:
        entry = builtins.REGISTRY[workload.builtin]
        code = builtins.source_sha256(entry)
        if code == entry.ran_sha256 and not workload.specs() and not workload.quality_identity() \
                and workload.augment is None:
            return None
        out = {"name": entry.name} | ({} if code == entry.ran_sha256 else {"source_sha256": code})
    for role, spec in workload.specs().items():
        located = locate(spec, base_dir, role)
        out[role] = {"callable": split(spec)[1], "source_sha256": source_sha256(located, role), "located": located}
    if workload.augment == CROP_FLIP:  # the built-in's code, as a file of the user's would be
        out["augment"] = {"callable": CROP_FLIP, "source_sha256": source_sha256(_augment_module(), "augment")}
    given = workload.quality_identity()
    return out | {"options": workload.options} | ({"quality": given} if given else {})


def hashed(identity: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of an identity the cell id covers: where the code lies is left out, so the same
    file gives the same ids on any machine and from harness.sweep."""
    if identity is None:
        return None
    return {k: ({"callable": v["callable"], "source_sha256": v["source_sha256"]} if k in ROLES else v)
            for k, v in identity.items()}


def register(fn: Callable) -> str:
    """A spec for a callable handed over in Python: its file where it lives in an importable one,
    else an in-process name (`<python-HASH>:NAME`) that only this process can load."""
    module = inspect.getmodule(fn)
    file = getattr(module, "__file__", None)
    name = getattr(fn, "__qualname__", "")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        name = re.sub(r"\W", "_", getattr(fn, "__name__", "")) or "fn"  # a lambda, a local function
    if file and module.__name__ != "__main__" and str(file).endswith(".py") and getattr(module, name, None) is fn:
        return f"{Path(file).resolve()}:{name}"
    described = code_identity.callable_identity(fn, _own_source(fn))  # code, captured values, helpers
    spec = f"{IN_PROCESS}{hashlib.sha256(described.encode()).hexdigest()[:12]}>:{name.lstrip('_') or 'fn'}"
    REGISTERED[spec] = fn
    return spec
