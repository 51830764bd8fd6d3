"""The typed models of a sweep's plan.json and predict.json: what every reader checks before it
believes one. As with result.json (record/schema.py), a file that fails is one warning naming the
file and the field, and is treated as absent; keys a newer harness adds are read past, and named
in a note; a schema_version newer than this harness's is refused.

Only what a reader uses is typed: the cells' ids and swept values, the report section, and the
prediction's numbers (S_min, B_noise, every row, intervals as pairs, cost, sweet spot). A number
that decides something must be finite and in its range: a batch size an integer >= 1, a share in
[0, 1], steps > 0.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Len
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from harness.config import SweepConfig, flatten
from harness.errors import ConfigError
from harness.plan import PLAN_SCHEMA_VERSION
from harness.record.schema import Count, Finite, Invalid, Positive, Swept, _Open, read_document

PREDICT_SCHEMA_VERSION = 2  # harness/prediction/forecast.py writes it; 1 is read too (no grid interval)

Share = Annotated[Finite, Field(ge=0, le=1)]
Pair = Annotated[list[Finite], Len(2, 2)]


class ReportSection(_Open):
    target_accuracy: Finite = 0.97  # in the metric's units (harness/quality.py)
    tolerance: Annotated[Finite, Field(ge=0)] = 0.005


class PlanConfig(_Open):
    name: StrictStr
    report: ReportSection = ReportSection()
    optim: dict[str, Any] = {}
    train: dict[str, Any] = {}
    sweep: dict[str, list[Any]] = {}


class PlanCell(_Open):
    index: Count
    id: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]+$")
    swept: Swept = {}


class PlanDocument(_Open):
    schema_version: Annotated[StrictInt, Field(ge=1)]
    sweep: StrictStr
    config: PlanConfig
    cells: list[PlanCell]
    command: Any = None
    workloads: list[Any] = []


class PredictionRow(_Open):
    batch_size: Positive
    steps_to_target: Annotated[Finite, Field(gt=0)]
    steps_interval: Pair | None = None
    steps_grid_interval: Pair | None = None
    budget_steps: Count | None = None
    within_budget: StrictBool = True
    time_to_target_s: Annotated[Finite, Field(ge=0)]
    time_interval_s: Pair | None = None
    win_share: Share | None = None


class Fit(_Open):
    s_min: Annotated[Finite, Field(gt=0)]
    b_noise: Annotated[Finite, Field(gt=0)]
    s_min_interval: Pair | None = None
    b_noise_interval: Pair | None = None
    predictions: Annotated[list[PredictionRow], Len(1)]


class Inputs(_Open):
    grid: list[Positive]
    short_run_batch_sizes: list[Positive]
    target: Finite  # in the metric's units (harness/quality.py)
    chosen_rates: dict[str, Finite | None]
    learning_rate_source: StrictStr
    grid_cells: list[StrictStr] = []


class Cost(_Open):
    train_seconds: Annotated[Finite, Field(ge=0)]
    check_seconds: Annotated[Finite, Field(ge=0)] | None = None
    wall_seconds: Annotated[Finite, Field(ge=0)] | None = None


class SweetSpot(_Open):
    batch_size: Positive
    neighbours: list[Positive]


class Doubt(_Open):
    kind: StrictStr
    text: StrictStr


class PredictDocument(_Open):
    schema_version: Annotated[StrictInt, Field(ge=1)]
    config: PlanConfig
    inputs: Inputs
    fit: Fit | None
    sweet_spot: SweetSpot | None = None
    cost: Cost
    doubts: list[Doubt] = []
    b_simple: Finite | None = None
    failure: StrictStr | None = None
    created_utc: Any = None
    short_runs: list[Any] = []
    timing: list[Any] = []
    environment: dict[str, Any] = {}


RETIME_SCHEMA_VERSION = 1


class Retiming(_Open):
    batch_size: Positive
    seconds_per_step: Annotated[Finite, Field(gt=0)]
    window_seconds_per_step: Annotated[list[Annotated[Finite, Field(gt=0)]], Len(min_length=1)]
    steps: Count
    cell_id: StrictStr  # the done cell whose settings were timed
    timing_disturbed_reason: StrictStr | None = None


class RetimeDocument(_Open):
    """retime.json (`harness retime`): seconds per step re-measured for a finished folder."""
    schema_version: Annotated[StrictInt, Field(ge=1)]
    sweep: StrictStr
    created_utc: StrictStr
    environment: dict[str, Any] = {}
    timings: Annotated[list[Retiming], Len(min_length=1)]


CAPACITY_SCHEMA_VERSION = 1


class CapacityTrial(_Open):
    micro_batch_size: Positive
    fits: StrictBool
    fits_by_rank: list[StrictBool] = []
    seconds: Finite | None = None


class CapacityDocument(_Open):
    """capacity.json (`harness capacity`): the largest micro-batch per process that fits."""
    schema_version: Annotated[StrictInt, Field(ge=1)]
    sweep: StrictStr
    device: StrictStr
    device_type: StrictStr
    num_processes: Positive
    mixed_precision: StrictStr
    trials: Annotated[list[CapacityTrial], Len(min_length=1)]
    largest_fits: Count
    first_fails: Positive | None
    bounded_by_need: StrictBool
    upper: Positive
    margin: Annotated[Finite, Field(ge=0, lt=1)]
    safe_micro_batch_size: Count
    memory_model: dict[str, Any] | None = None
    memory_limit_bytes: Positive | None = None
    predicted_largest: StrictInt | None = None


def read_capacity(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    return _read(path, CapacityDocument, CAPACITY_SCHEMA_VERSION, notes)


def read_retime(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    return _read(path, RetimeDocument, RETIME_SCHEMA_VERSION, notes)


def read_plan(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    return _read(path, PlanDocument, PLAN_SCHEMA_VERSION, notes)


def read_prediction(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    document = _read(path, PredictDocument, PREDICT_SCHEMA_VERSION, notes)
    spot = (document.get("sweet_spot") or {}).get("batch_size")
    if spot is not None and spot not in [r["batch_size"] for r in (document["fit"] or {}).get("predictions", [])]:
        raise Invalid(f"{path}: field sweet_spot.batch_size: {spot} is not a batch size of fit.predictions")
    return document


def _read(path: Path, model: type[BaseModel], newest: int, notes: list[str] | None) -> dict[str, Any]:
    """The file as a plain dict, checked against `model` (record/schema.read_document); keys the
    model does not know are named in `notes`."""
    document = read_document(path, model, newest, f"a {path.name}")
    extra = sorted(set(document) - set(model.model_fields))
    if extra and notes is not None:
        notes.append(f"{path} has keys this harness does not know ({', '.join(extra)[:120]}): a newer harness "
                     f"wrote it; read without them")
    return document


# what may change between runs into one folder: the grid's values (extending it), how the report
# reads it, and the launch's threads; anything else trains other cells than the folder's
MAY_CHANGE = ("sweep.", "report.", "train.threads", "checks.", "predict.", "log_with")


def check_one_config(sweep_dir: Path, config: SweepConfig, force: bool,
                     fix: str = "or --force to replace its plan.json (its cells stay)") -> None:
    """A folder holds one config: refused (one line) when its plan.json was made from another,
    naming the keys that differ, unless `force`."""
    try:
        old = read_plan(sweep_dir / "plan.json")["config"]
    except Invalid:
        return  # none yet, or not believable: this run writes it
    old = _as_read_now(old)
    new = json.loads(json.dumps(config.model_dump(mode="json")))
    flat_old, flat_new = ({k: _code_by_name(json.dumps(v, sort_keys=True)) for k, v in flatten(c).items()}
                          for c in (old, new))
    swept = set(old.get("sweep") or {}) | set(new.get("sweep") or {})  # swept in either, or pinned: the grid
    differing = [k for k in sorted(set(flat_old) | set(flat_new))
                 if flat_old.get(k) != flat_new.get(k) and not k.startswith(MAY_CHANGE) and k not in swept]
    if differing and not force:
        shown = ", ".join(f"{k}: {flat_old.get(k, 'absent')[:40]} -> {flat_new.get(k, 'absent')[:40]}"
                          for k in differing[:4])
        raise ConfigError(f"{sweep_dir} holds sweep {config.name} planned with another config ({shown}"
                          f"{', ...' if len(differing) > 4 else ''}); use another --results-dir, {fix}")


def _code_by_name(value: str) -> str:
    """A callable handed to harness.sweep is named by its source's hash: edited, it is the same
    setting (as an edited FILE.py:NAME is), the cells' ids tell the code apart."""
    return re.sub(r"<python-[0-9a-f]+>:", "<python>:", value)


def _as_read_now(planned: dict) -> dict:
    """A plan's config as this harness reads it: a setting added since has its default, a renamed
    one its new name, so that only what the user changed differs."""
    try:
        return json.loads(json.dumps(SweepConfig.model_validate(planned).model_dump(mode="json")))
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError: compare it as written
        return planned
